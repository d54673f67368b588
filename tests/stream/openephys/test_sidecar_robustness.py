"""The live sidecar survives what a real network and GUI throw at it, and counts it."""

import threading
import time

import numpy as np

from livedenoise.stream.sinks.ephys_socket import read_packet
from livedenoise.stream.openephys.sidecar import Sidecar, SidecarConfig
from livedenoise.stream.protocols.zmq_interface import DATA, DataEncoder, encode_ttl
from oerig import Plugin, start_sidecar, wait_for

C, N, BLOCKS = 16, 500, 24


def test_malformed_wrong_size_missing_channel_duplicates_and_events(tiny_models, ports):
    data_port, out_port = ports
    plugin = Plugin(data_port)
    pub = plugin.pub
    sc = Sidecar(SidecarConfig(model=str(tiny_models["block-ephys"]), backend="torch", input=f"tcp://127.0.0.1:{data_port}",
                               socket_port=0, zmq_output=None, stats_every=0, quiet=True, idle_flush_s=0.3)).start()
    got = []

    def client():
        import socket

        s = socket.create_connection(("127.0.0.1", sc.socket.port), timeout=300)
        try:
            while True:
                got.append(read_packet(s)[1])
        except OSError:
            pass

    th = threading.Thread(target=client, daemon=True)
    th.start()
    assert plugin.wait_subscribed()  # the sidecar's subscription arrived: nothing sent from now on is lost
    enc = DataEncoder("ProbeA-AP", [f"CH{k + 1}" for k in range(C)], 30000.0)
    rng = np.random.default_rng(0)
    for b in range(BLOCKS):
        parts = enc.encode_block(b * N, rng.standard_normal((C, N)).astype(np.float32) * 10)
        if b == 5:
            pub.send_multipart([DATA, b"{this is not json", b"\0" * 8])
        if b == 7:
            bad = list(parts[3])
            bad[2] = bad[2][:-4]  # payload shorter than data_size
            parts[3] = bad
        if b == 9:
            parts = parts[:6] + parts[7:]  # channel 6 never arrives
        if b == 11:
            parts = parts + [parts[2]]  # a duplicated message
        if b == 13:
            pub.send_multipart(encode_ttl(enc.message_num, "ProbeA-AP", b * N, 0, True))
        for p in parts:
            pub.send_multipart(p)
        time.sleep(0.01)
    wait_for(lambda: sc.snapshot()["output_samples"] >= BLOCKS * N, 120)
    stats = sc.stop()
    th.join(60)
    plugin.close()
    assert stats["malformed"] == 2  # bad JSON + wrong data_size
    assert stats["missing_channels"] == 2  # channel 3 of block 7 (dropped as malformed) + channel 6 of block 9
    assert stats["duplicates"] == 1
    assert stats["events"] == 1
    assert stats["restarts"] == 0 and stats["engine_errors"] == 0
    assert stats["samples_in"] == stats["output_samples"] == BLOCKS * N  # nothing stalled, nothing lost
    out = np.concatenate(got, axis=1)
    assert out.shape == (C, BLOCKS * N) and np.isfinite(out).all()


def test_sidecar_without_any_plugin_stops_cleanly(tiny_models, ports):
    data_port, out_port = ports
    sc = Sidecar(SidecarConfig(model=str(tiny_models["interp-ephys"]), backend="torch", input=f"tcp://127.0.0.1:{data_port}",
                               socket_port=0, zmq_output=f"tcp://127.0.0.1:{out_port}", stats_every=0, quiet=True,
                               heartbeat_s=0.1)).start()
    assert wait_for(lambda: sc.snapshot()["heartbeats"] >= 1, 120)
    t0 = time.monotonic()
    stats = sc.stop()
    assert time.monotonic() - t0 < 60  # no hang waiting for a plugin that never came
    assert stats["samples_in"] == 0 and stats["heartbeats"] >= 1 and stats["heartbeat_replies"] == 0


def test_restarted_acquisition_and_message_gaps_do_not_stall(tiny_models, ports, tmp_path):
    data_port, _ = ports
    plugin = Plugin(data_port)
    pub = plugin.pub
    sc = Sidecar(SidecarConfig(model=str(tiny_models["interp-ephys"]), backend="torch", input=f"tcp://127.0.0.1:{data_port}",
                               socket_port=None, zmq_output=None, stats_every=0, quiet=True, idle_flush_s=5,
                               record=str(tmp_path / "rec"))).start()
    assert plugin.wait_subscribed()
    rng = np.random.default_rng(1)
    for run in range(2):  # the second run starts again at message_num 0 / sample_num 0
        enc = DataEncoder("ProbeA-AP", [f"CH{k + 1}" for k in range(C)], 30000.0)
        for b in range(6):
            parts = enc.encode_block(b * N, rng.standard_normal((C, N)).astype(np.float32) * 10)
            if run == 0 and b == 3:
                enc.message_num += 5  # five messages lost upstream (numbered, never sent)
            for p in parts:
                pub.send_multipart(p)
            time.sleep(0.01)
    wait_for(lambda: sc.snapshot()["samples_in"] >= 12 * N, 120)
    stats = sc.stop()
    plugin.close()
    assert stats["restarts"] == 1 and stats["segments"] == 2
    assert stats["gaps"] == 5
    assert stats["samples_in"] == 12 * N and stats["output_samples"] == 12 * N
    from livedenoise.io.readers_ephys import open_recording

    assert open_recording(tmp_path / "rec" / "denoised").n_samples == 6 * N
    assert open_recording(tmp_path / "rec" / "segment2" / "denoised").n_samples == 6 * N


def test_an_engine_too_slow_for_the_stream_skips_old_data_instead_of_growing_memory(tiny_models, ports):
    from livedenoise.stream.ephys import open_ephys_engine

    class Slow:
        def __init__(self, eng):
            self.eng, self.card = eng, eng.card

        def run(self, x, out=None):
            time.sleep(0.15)
            return self.eng.run(x)

    data_port, _ = ports
    plugin = Plugin(data_port)
    pub = plugin.pub
    eng = Slow(open_ephys_engine(tiny_models["block-ephys"], "torch"))
    sc = Sidecar(SidecarConfig(input=f"tcp://127.0.0.1:{data_port}", socket_port=None, zmq_output=None, stats_every=0,
                               quiet=True, idle_flush_s=5, max_backlog_s=2 * N / 30000.0, max_block=N), engine=eng).start()
    assert plugin.wait_subscribed()
    enc = DataEncoder("ProbeA-AP", [f"CH{k + 1}" for k in range(C)], 30000.0)
    for b in range(40):
        for p in enc.encode_block(b * N, np.ones((C, N), np.float32)):
            pub.send_multipart(p)
        time.sleep(0.005)
    wait_for(lambda: (lambda s: s["samples_in"] == 40 * N and s["output_samples"] + s["overflow"] == 40 * N)(
        sc.snapshot()), 120)
    stats = sc.stop()
    plugin.close()
    assert stats["overflow"] > 0 and stats["samples_in"] == 40 * N
    assert stats["output_samples"] + stats["overflow"] == 40 * N
    assert stats["engine_errors"] == 0


def test_a_stalled_engine_thread_bounds_the_queue_in_bytes_and_counts_the_lost_blocks(tiny_models, ports, tmp_path):
    """Engine thread not running yet (a stalled disk or engine call): the hand-over holds at most max_queue_mb;
    the rest is counted as lost_samples (not silently grown in memory); what was queued is recorded once the
    engine runs."""
    from oerig import Acquisition, check_all_recorded

    data_port, _ = ports
    plugin = Plugin(data_port)
    n, per_block = 1000, C * 1000 * 4  # float32 (C, n) blocks
    cfg = SidecarConfig(model=str(tiny_models["block-ephys"]), backend="torch", input=f"tcp://127.0.0.1:{data_port}",
                        socket_port=None, zmq_output=None, stats_every=0, quiet=True, idle_flush_s=60.0,
                        channels=C, record=str(tmp_path / "rec"), max_queue_mb=3.5 * per_block / 2**20)
    sc = Sidecar(cfg)
    try:
        sc.receiver.start()  # only the receiver: the engine thread is not running
        assert plugin.wait_subscribed()
        acq = Acquisition(plugin, C)
        for b in range(10):
            acq.block(b * n, n)
        assert wait_for(lambda: sc.receiver.counters()["blocks_in"] == 10)
        assert sc.q.bytes <= 3.5 * per_block
        assert (sc.q.qsize(), sc.q.lost_samples) == (3, 7 * n)
        stats = sc.snapshot()
        assert stats["lost_samples"] == 7 * n and stats["queue"] == 3
        sc.start()  # the engine thread runs now: what was queued is processed and recorded
        assert wait_for(lambda: sc.snapshot()["processed_samples"] + sc.snapshot()["overflow"] >= 3 * n)
        final = sc.stop()
    finally:
        plugin.close()
    assert final["lost_samples"] == 7 * n and final["samples_in"] == 10 * n
    assert final["unprocessed_samples"] == 0
    check_all_recorded(tmp_path / "rec", {s: x for s, x in acq.sent.items() if s < 3 * n})


def test_a_sidecar_pointed_at_no_plugin_says_so_in_its_stats_line(tiny_models, ports):
    from livedenoise.stream.openephys.sidecar import stats_line

    data_port, _ = ports
    sc = Sidecar(SidecarConfig(model=str(tiny_models["block-ephys"]), backend="torch", input=f"tcp://127.0.0.1:{data_port}",
                               socket_port=None, zmq_output=None, stats_every=0, quiet=True, heartbeat_s=0.05)).start()
    try:
        assert wait_for(lambda: sc.snapshot()["heartbeats"] >= 3, 120)
        assert "nothing from the plugin" in stats_line(sc.snapshot())
    finally:
        sc.stop()
    plugin = Plugin(data_port)  # the plugin is there: the line no longer says so
    try:
        sc = start_sidecar(tiny_models["block-ephys"], data_port, plugin, heartbeat_s=0.05)
        assert wait_for(lambda: sc.snapshot()["heartbeat_replies"] >= 1, 120)
        assert "nothing from the plugin" not in stats_line(sc.snapshot())
        sc.stop()
    finally:
        plugin.close()
