"""Ephys viewer fed Open Ephys ZMQ Interface-format messages over real sockets (offscreen Qt)."""

import time

import numpy as np
from gui_helpers import wait_until

from livedenoise.gui.ephys import EphysWindow, minmax_decimate
from livedenoise.gui.ephys_source import EphysRing, ZmqInterfaceSource, depth_order, neuropixels_positions
from livedenoise.stream.protocols.zmq_interface import encode_data

RATE = 30000.0
BLOCK = 300


def encode_data_message(ch, sample_num, data, rate, message_num=0):
    return encode_data(message_num, "ProbeA-AP", ch, f"CH{ch + 1}", sample_num, rate, data)


def test_source_counts_malformed_and_missing_messages():
    src = ZmqInterfaceSource("raw", "inproc://unused")
    good = encode_data_message(7, 1234, np.arange(5, dtype=np.float32), RATE, message_num=9)
    src.ingest(good)
    src.ingest(encode_data_message(7, 1239, np.arange(5, dtype=np.float32), RATE, message_num=12))
    for parts in ([good[0], b"{", good[2]], [good[0], good[1], good[2][:-4]], good[:2]):
        src.ingest(parts)
    st = src.status()
    assert (st.messages, st.malformed, st.missing_messages, st.samples, st.channels) == (2, 3, 2, 10, 1)
    out, end = src.ring.read(np.array([7]), 10)
    assert end == 1244 and list(out[0]) == [0, 1, 2, 3, 4] * 2


def test_ring_wraps_and_counts_gaps():
    ring = EphysRing(n_channels=2, capacity=8)
    ring.write(1, 0, np.arange(6, dtype=np.float32), RATE)
    ring.write(1, 6, np.arange(6, 12, dtype=np.float32), RATE)  # wraps
    out, end = ring.read(np.array([1]), 8)
    assert end == 12 and list(out[0]) == list(range(4, 12))
    ring.write(1, 20, np.zeros(2, np.float32), RATE)
    assert ring.gap_samples == 8


def test_neuropixels_depth_order():
    pos = neuropixels_positions(384)
    order = depth_order(pos)
    assert sorted(order) == list(range(384))
    assert np.all(np.diff(pos[order, 1]) >= 0)
    assert pos[383, 1] == 3820


def test_ephys_view_counts_lag_heatmap_and_screenshot(qapp, publishers, tmp_path):
    pr, pd = publishers(), publishers()
    raw = ZmqInterfaceSource("raw", pr.endpoint, capacity=1 << 14)
    den = ZmqInterfaceSource("denoised", pd.endpoint, capacity=1 << 14)
    win = EphysWindow(raw, den, n_channels=16, window_s=0.2)
    win.resize(1200, 700)
    win.show()
    raw.start()
    den.start()
    pr.wait_subscribed()
    pd.wait_subscribed()
    try:
        nch, nblk, lag_blocks = 48, 40, 2
        rng = np.random.default_rng(0)
        mn_raw = mn_den = 0
        for b in range(nblk):
            s0 = b * BLOCK
            t = (s0 + np.arange(BLOCK)) / RATE
            for ch in range(nch):
                clean = 80 * np.sin(2 * np.pi * 50 * t) * (ch % 5 == 0)
                if not (b == 7 and ch == 3):  # one message lost upstream
                    pr.send(encode_data_message(ch, s0, clean + rng.normal(0, 30, BLOCK), RATE, mn_raw))
                mn_raw += 1
                if b >= lag_blocks:
                    d0 = (b - lag_blocks) * BLOCK
                    dc = 80 * np.sin(2 * np.pi * 50 * (d0 + np.arange(BLOCK)) / RATE) * (ch % 5 == 0)
                    pd.send(encode_data_message(ch, d0, dc, RATE, mn_den))
                    mn_den += 1
            if b % 10 == 0:
                qapp.processEvents()
        pr.send([b"DATA\0", b"not json", b""])
        n_raw, n_den = nblk * nch - 1, (nblk - lag_blocks) * nch
        assert wait_until(lambda: raw.status().messages == n_raw and den.status().messages == n_den
                          and raw.status().malformed == 1, 60, qapp)
        for _ in range(3):
            qapp.processEvents()
            win.tick()
            time.sleep(0.02)
        f = win.status_fields()
        assert f["raw"]["channels"] == nch and f["raw"]["sample_rate"] == RATE
        assert f["raw"]["missing_messages"] == 1 and f["raw"]["gap_samples"] == BLOCK and f["raw"]["malformed"] == 1
        assert f["denoised"]["missing_messages"] == 0
        assert f["lag_samples"] == lag_blocks * BLOCK
        text = win.update_status()
        assert "lag 600 samples (20.0 ms)" in text and "malformed 1" in text
        assert win.rendered >= 1

        # the drawn window ends at the last sample both streams have
        assert win._heat.shape[0] == nch
        end = den.ring.head
        x, _ = den.ring.read(np.array([0]), BLOCK, end)
        expect = 80 * np.sin(2 * np.pi * 50 * (end - BLOCK + np.arange(BLOCK)) / RATE)
        np.testing.assert_allclose(x[0], expect, atol=1e-3)

        win.layout_box.setCurrentText("side by side")
        win.order_box.setCurrentText("channel number")
        win.heat_box.setCurrentText("residual")
        win.render_now()
        win._render_heat(win.order(np.arange(nch)), 2000, end, RATE)
        png = tmp_path / "ephys.png"
        win.export_png(str(png))
        from PySide6 import QtGui

        from livedenoise.gui.imaging import qimage_array

        shot = qimage_array(QtGui.QImage(str(png)))
        assert shot.shape[0] > 500 and shot.std() > 10
    finally:
        win.close()


def test_minmax_decimation_keeps_spikes():
    x = np.zeros((2, 30000), np.float32)
    x[1, 12345] = -500.0
    idx, y = minmax_decimate(x, 1000)
    assert y.shape[1] <= 1000 and y[1].min() == -500.0 and y[0].min() == 0
    assert len(idx) == y.shape[1]
