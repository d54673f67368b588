"""Imaging viewer against real ZMQ PUB sockets on loopback (offscreen Qt)."""

import csv
import time

import numpy as np
import pytest
from gui_helpers import frame, stats, wait_until

from livedenoise.gui.app import ViewOptions, build_imaging
from livedenoise.gui.imaging import ImagingWindow
from livedenoise.gui.sources import FileFrameSource, ZmqFrameSource

H, W = 32, 48
ROI = (4, 10, 5, 15)  # rows y0:y1, columns x0:x1


def _window(qapp, publishers, **kw):
    pr, pd = publishers(), publishers()
    raw = ZmqFrameSource("raw", pr.endpoint, history=32)
    den = ZmqFrameSource("denoised", pd.endpoint)
    win = ImagingWindow(raw, den, **kw)
    win.resize(1400, 800)
    win.show()
    raw.start()
    den.start()
    pr.wait_subscribed()
    pd.wait_subscribed()
    return win, pr, pd


def _settle(qapp, win, cond, timeout=60.0):
    ok = wait_until(cond, timeout, qapp)
    for _ in range(3):  # let the display timer draw the newest frames
        qapp.processEvents()
        win.tick()
        time.sleep(0.02)
    return ok


def _roi_frame(value_in, value_out=0, dtype="int16"):
    img = np.full((H, W), value_out, dtype)
    y0, y1, x0, x1 = ROI
    img[y0:y1, x0:x1] = value_in
    return img


def test_status_counts_roi_traces_and_screenshot(qapp, publishers, tmp_path):
    win, pr, pd = _window(qapp, publishers)
    try:
        rid = win.add_roi(*ROI)
        n = 40
        sent = [k for k in range(n) if k != 10]  # frame 10 never sent: one dropped frame
        for k in sent:
            pr.send(frame(k, _roi_frame(100 + k, 7)))
            pd.send(frame(k, _roi_frame(50.0 + k, 3.0, "float32"), dtype="float32", lag=2,
                          latency_ms=float(1 + k % 4), model="toy-model"))
        pr.send([b"frame", b"{not json", b""])
        pr.send([b"frame", b'{"frame": 1, "shape": [2, 2], "dtype": "int16"}', b"\0" * 3])
        assert _settle(qapp, win, lambda: win.den.status().frames == len(sent) and win.raw.status().malformed == 2)

        f = win.status_fields()
        assert f["raw_frames"] == len(sent) and f["denoised_frames"] == len(sent)
        assert f["dropped"] == 1  # no stats message yet: the viewer's own gap count
        assert f["malformed"] == 2
        assert f["lag"] == 2 and f["model"] == "toy-model"
        assert f["latency_p50_ms"] == pytest.approx(2.0, abs=1.0) and f["latency_p99_ms"] == pytest.approx(4.0, abs=0.1)
        assert 1 <= f["rendered"] <= len(sent)

        # ROI traces: one point per frame received, the exact constant inside the ROI
        tr = win.roi_traces(rid)
        t, fr, v = tr["raw"]
        assert len(v) == len(sent) and list(fr) == sent
        np.testing.assert_allclose(v, [100 + k for k in sent])
        np.testing.assert_allclose(t, [k / 30 for k in sent])
        np.testing.assert_allclose(tr["denoised"][2], [50 + k for k in sent])

        # the service's stats message takes over the counts it knows
        pd.send(stats(frames_in=39, frames_out=39, dropped_upstream=1, skipped=3, malformed=0, fps_in=30.0,
                      fps_out=29.0, latency_ms_p50=4.5, latency_ms_p99=9.5, model="toy-model", backend="onnxruntime",
                      innovation=True))
        assert _settle(qapp, win, lambda: win.den.status().stats_messages == 1)
        f = win.status_fields()
        assert (f["skipped"], f["fps_in"], f["fps_out"], f["backend"]) == (3, 30.0, 29.0, "onnxruntime")
        assert (f["latency_p50_ms"], f["latency_p99_ms"]) == (4.5, 9.5)
        assert (f["malformed"], f["viewer_malformed"]) == (0, 2)
        text = win.update_status()
        for piece in ("in 30.0 fps", "out 29.0 fps", "p50 4.5 ms", "p99 9.5 ms", "lag 2", "dropped 1",
                      "skipped 3", "malformed 0 (viewer 2)", "toy-model + innovation", "onnxruntime"):
            assert piece in text, (piece, text)

        # the displayed raw frame is the one that matches the displayed denoised frame
        assert win._shown["raw"].frame == win._shown["denoised"].frame == sent[-1]

        # screenshot: non-blank, raw and denoised panels differ
        png = tmp_path / "view.png"
        win.export_png(str(png))
        from PySide6 import QtGui

        from livedenoise.gui.imaging import qimage_array

        shot = qimage_array(QtGui.QImage(str(png)))
        assert shot.std() > 10
        a, b = win.panel_image("raw"), win.panel_image("denoised")
        h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
        a, b = a[:h, :w], b[:h, :w]
        assert a.std() > 5 and b.std() > 5
        assert np.abs(a.astype(int) - b.astype(int)).mean() > 1

        # CSV: raw and denoised joined on frame number
        rows = win.export_csv(str(tmp_path / "traces.csv"))
        with open(tmp_path / "traces.csv") as fh:
            table = list(csv.DictReader(fh))
        assert rows == len(table) == len(sent)
        assert float(table[0]["raw"]) == 100 and float(table[0]["denoised"]) == 50
    finally:
        win.close()


def test_conflation_counts_every_frame_but_draws_fewer(qapp, publishers):
    win, pr, pd = _window(qapp, publishers, refresh_hz=60)
    try:
        n = 3000
        img = np.zeros((16, 16), np.int16)
        t0 = time.monotonic()
        for k in range(n):
            img[:] = k % 1000
            pr.send(frame(k, img))
            if k % 100 == 0:
                qapp.processEvents()
        assert _settle(qapp, win, lambda: win.raw.status().frames == n)
        elapsed = time.monotonic() - t0
        st = win.raw.status()
        assert st.frames == n and st.gaps == 0 and st.malformed == 0
        # drawn at most once per display tick (one per 16 ms, +10% timer jitter, +10 for the ticks above), however
        # long receiving took: drawing every frame would draw all n in well under n ticks' time
        most = elapsed * 1000 / win.timer.interval() * 1.1 + 10
        assert 1 <= win.rendered <= most, (win.rendered, most, elapsed)
        assert win._shown["raw"].frame == n - 1  # the newest frame is what is shown
    finally:
        win.close()


def test_pause_keeps_counting_and_resumes_at_the_newest(qapp, publishers):
    win, pr, pd = _window(qapp, publishers)
    try:
        rid = win.add_roi(*ROI)
        for k in range(5):
            pr.send(frame(k, _roi_frame(k)))
        assert _settle(qapp, win, lambda: win.raw.status().frames == 5)
        win.set_paused(True)
        drawn = win.rendered
        for k in range(5, 15):
            pr.send(frame(k, _roi_frame(k)))
        assert _settle(qapp, win, lambda: win.raw.status().frames == 15)
        assert win.rendered == drawn and win._shown["raw"].frame == 4
        assert "PAUSED" in win.update_status()
        assert len(win.roi_traces(rid)["raw"][2]) == 15  # traces kept every frame while paused
        win.set_paused(False)
        _settle(qapp, win, lambda: True)
        assert win.rendered > drawn and win._shown["raw"].frame == 14
    finally:
        win.close()


def test_channel_and_plane_selectors(qapp, publishers):
    win, pr, pd = _window(qapp, publishers)
    try:
        for k in range(3):
            for ch in (1, 2):
                for pl in (1, 2, 3):
                    pr.send(frame(k, np.full((H, W), 10 * ch + pl, np.int16), channel=ch, plane=pl))
        assert _settle(qapp, win, lambda: win.raw.status().frames == 18)
        assert [win.channel_box.itemText(i) for i in range(win.channel_box.count())] == ["1", "2"]
        assert [win.plane_box.itemText(i) for i in range(win.plane_box.count())] == ["1", "2", "3"]
        assert win.status_fields()["dropped"] == 0  # frame numbers are per stream
        win.select_stream(2, 3)
        win.render_now()
        assert win._shown["raw"].stream == (2, 3) and float(win._bufs["raw"][0, 0]) == 23
    finally:
        win.close()


def test_no_data_message_names_the_endpoint(qapp, capsys):
    from gui_helpers import free_endpoint

    ep = free_endpoint()  # nothing publishes here
    raw = ZmqFrameSource("raw", ep).start()
    win = ImagingWindow(raw, None, no_data_timeout=0.3)
    try:
        assert wait_until(lambda: bool(win._check_no_data() or win.no_data), 60, qapp)
        text = win.update_status()
        assert f"no data on {ep}" in text
        assert ep in capsys.readouterr().err
    finally:
        win.close()


def test_file_playback_records_and_npy(qapp, tmp_path):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(1)
    clean = np.repeat(_roi_frame(200.0, 20.0, "float32")[None], 12, axis=0)
    raw = (clean + rng.normal(0, 5, clean.shape)).astype(np.int16)
    # a `serve --record`-style pair: frame numbers 100.., the denoised file starting 2 frames later
    with h5py.File(tmp_path / "raw_c1_p2_a001.h5", "w") as f:
        f["frames"], f["frame"], f["t"] = raw, np.arange(100, 112), np.arange(12) / 30
        f.attrs["channel"], f.attrs["plane"] = 1, 2
    with h5py.File(tmp_path / "denoised_c1_p2_a001.h5", "w") as f:
        f["frames"], f["frame"], f["t"] = clean[2:], np.arange(102, 112), np.arange(2, 12) / 30
        f.attrs["channel"], f.attrs["plane"] = 1, 2
    win = build_imaging(ViewOptions(file=str(tmp_path / "raw_c1_p2_a001.h5"), fps=0, rois=((5, 4, 10, 6),)))
    try:
        assert win.den is not None and win.den.endpoint.endswith("denoised_c1_p2_a001.h5")
        assert _settle(qapp, win, lambda: win.raw.status().finished and win.den.status().finished)
        assert (win.raw.status().frames, win.den.status().frames) == (12, 10)
        assert win.stream == (1, 2) and win._shown["denoised"].frame == 111 and win._shown["raw"].frame == 111
        tr = win.roi_traces(0)
        assert list(tr["denoised"][1]) == list(range(102, 112))
        np.testing.assert_allclose(tr["denoised"][2], 200.0)
        np.testing.assert_allclose(tr["raw"][2], 200.0, atol=3)
    finally:
        win.close()

    np.save(tmp_path / "raw.npy", raw)
    src = FileFrameSource("raw", np.load(tmp_path / "raw.npy", mmap_mode="r"), fps=200).start()
    assert wait_until(lambda: src.status().finished, 60)
    assert src.status().frames == 12 and src.newest.read((1, 1))[1].frame == 11


def test_repaints_do_not_leak_references_to_none(qapp):
    """PySide6 6.12.0 dropped a reference to None/True on every repaint until Python aborted."""
    import sys

    from livedenoise.stream.protocols.frames import FrameHeader

    raw, den = FileFrameSource("raw", np.zeros((1, H, W), np.int16)), FileFrameSource("denoised", np.zeros((1, H, W)))
    win = ImagingWindow(raw, den)
    win.timer.stop()
    win.add_roi(*ROI)
    win.show()
    try:
        def step(k):
            hdr = FrameHeader(frame=k, t=k / 30, shape=(H, W), dtype="float32")
            img = np.full((H, W), float(k % 7), np.float32)
            raw.newest.put(hdr, img)
            den.newest.put(hdr, img * 0.5)
            win.stream = (1, 1)
            win.render_now()
            win.update_status()
            qapp.processEvents()

        for k in range(20):
            step(k)
        before = sys.getrefcount(None), sys.getrefcount(True)
        for k in range(20, 220):
            step(k)
        after = sys.getrefcount(None), sys.getrefcount(True)
        assert after[0] - before[0] > -100 and after[1] - before[1] > -100, (before, after)
    finally:
        win.close()


def test_drawn_roi_appears_on_every_panel_moves_together_and_is_removed(qapp):
    from PySide6 import QtCore

    from livedenoise.gui.rois import RectRoi
    from livedenoise.stream.protocols.frames import FrameHeader

    raw = FileFrameSource("raw", np.zeros((1, H, W), np.int16))
    win = ImagingWindow(raw, None)
    win.timer.stop()
    try:
        win.draw_btn.setChecked(True)
        assert all(p.vb.draw_mode for p in win.panels.values())
        win.panels["meansub"].vb.rectDrawn.emit(QtCore.QRectF(5.2, 4.1, 9.5, 5.6))  # a drag that ended
        assert not win.draw_btn.isChecked()
        (rid,) = win._rois
        assert raw.traces._rois[rid] == RectRoi(4, 10, 5, 15)  # floor/ceil of the dragged rectangle
        first, *others = win._rois[rid]
        first.setPos((20, 12))  # moved on one panel: follows on all, and the trace starts over
        assert all(tuple(r.pos()) == (20.0, 12.0) for r in others)
        roi = raw.traces._rois[rid]
        assert (roi.y0, roi.x0) == (12, 20)
        raw.newest.put(FrameHeader(frame=0, t=0.0, shape=(H, W), dtype="int16"), np.zeros((H, W), np.int16))
        raw._on_frame(FrameHeader(frame=0, t=0.0, shape=(H, W), dtype="int16"), np.full((H, W), 3, np.int16))
        assert list(win.roi_traces(rid)["raw"][2]) == [3.0]
        win.remove_roi(rid)
        assert not win._rois and raw.traces.roi_ids() == []
    finally:
        win.close()


def test_auto_contrast_ignores_nan_and_inf():
    from livedenoise.gui.imaging import contrast_levels

    rng = np.random.default_rng(0)
    frame = rng.normal(100.0, 10.0, (64, 64)).astype(np.float32)
    masked = frame.copy()
    masked[:, :6] = np.nan  # motion-correction border
    masked[20:30, 20:30] = np.inf
    lo, hi = contrast_levels([masked, masked])
    assert np.isfinite([lo, hi]).all() and 60 < lo < 100 < hi < 140
    assert contrast_levels([np.full((8, 8), np.nan, np.float32)]) == (0.0, 1.0)


def test_empty_trace_plot_says_how_to_add_an_roi(qapp, publishers):
    win, pr, pd = _window(qapp, publishers)
    try:
        assert win.roi_hint.isVisible() and "no ROI" in win.roi_hint.toPlainText()
        assert "--roi X,Y,W,H" in win.roi_hint.toPlainText()  # the view command's own syntax
        rid = win.add_roi(*ROI)
        assert not win.roi_hint.isVisible()
        win.remove_roi(rid)
        assert win.roi_hint.isVisible()
        # and it is drawn: the empty plot is not blank where the hint sits
        from livedenoise.gui.imaging import qimage_array

        img = qimage_array(win.trace_plot.grab().toImage())
        h, w = img.shape[:2]
        assert img[h // 3: 2 * h // 3, w // 4: 3 * w // 4].std() > 5
    finally:
        win.close()


def test_mean_subtracted_panel_waits_for_its_running_mean(qapp, publishers):
    """In the first frames the running mean is mostly noise, so mean-subtracted patches would read as activity:
    the panel says "warming up: n of M frames" (M: frames in one time constant) and shows no image until then."""
    win, pr, pd = _window(qapp, publishers)
    try:
        win.tau_box.setValue(0.5)  # at 30 Hz: 15 frame intervals, so 16 frames
        rng = np.random.default_rng(0)
        for k in range(5):
            pd.send(frame(k, rng.normal(100, 30, (H, W)).astype(np.float32), dtype="float32"))
        assert _settle(qapp, win, lambda: win.den.status().frames == 5)
        label = win.panels["meansub"].label.text
        assert "warming up: 5 of 16 frames" in label, label
        assert "warming up: 5 of 16 frames" in win.meansub_note.toPlainText()
        assert not win.meansub_warm and not win.panels["meansub"].item.isVisible() and win.meansub_note.isVisible()
        for k in range(5, 20):
            pd.send(frame(k, rng.normal(100, 30, (H, W)).astype(np.float32), dtype="float32"))
        assert _settle(qapp, win, lambda: win.den.status().frames == 20)
        assert win.meansub_warm and win.panels["meansub"].item.isVisible() and not win.meansub_note.isVisible()
        assert "warming" not in win.panels["meansub"].label.text
        # the baseline is the plain average of those frames, not a first frame that fades slowly
        n, need = win.den.mean.warmup()
        assert n == 20 and need == 16
    finally:
        win.close()


def test_running_mean_is_the_plain_average_until_a_time_constant_has_passed():
    from livedenoise.gui.sources import RunningMean
    from livedenoise.stream.protocols.frames import FrameHeader

    m = RunningMean(tau=10.0)
    m.enabled = True
    for k, v in enumerate((0.0, 10.0, 20.0, 30.0)):
        m.update(FrameHeader(frame=k, t=k / 30, shape=(2, 2), dtype="float32", channel=1, plane=1),
                 np.full((2, 2), v, np.float32))
    np.testing.assert_allclose(m.read(), 15.0)
    assert m.warmup() == (4, 301)
