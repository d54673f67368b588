"""Issue 12 against a real sidecar on loopback: one test per kind of hostile or faulty input.

No message, counter or fault may stop reception or recording, or lose a
received sample, and the sidecar never looks healthy while deaf. Real ZeroMQ
sockets on 127.0.0.1, real recordings on disk; waits are for conditions.
"""

import json
import resource
import threading
import time

import numpy as np
import pytest
import zmq

from livedenoise.io.readers_ephys import open_recording
from livedenoise.stream.ephys import open_ephys_engine
from livedenoise.stream.protocols.zmq_interface import DATA, encode_data
from oerig import Acquisition, Plugin, check_all_recorded, filled_flags, raw_recordings, settled, start_sidecar, wait_for

C, N = 8, 500


@pytest.fixture
def rig(tiny_models, ports, tmp_path):
    data_port, _ = ports
    plugin = Plugin(data_port)
    made = []

    def make(**kw):
        sc = start_sidecar(tiny_models["block-ephys"], data_port, plugin, record=tmp_path / "rec", **kw)
        made.append(sc)
        return sc

    yield plugin, make, tmp_path / "rec"
    for sc in made:
        sc.stop()
    plugin.close()


def _raw_header(field: str, text: str) -> bytes:
    head = json.loads(encode_data(0, "ProbeA-AP", 0, "CH1", 0, 30000.0, np.zeros(N, np.float32))[1])
    where = head["content"] if field in head["content"] else head
    where[field] = "@@"
    return json.dumps(head).replace('"@@"', text).encode()


HOSTILE = {
    "num_samples Infinity": lambda: [DATA, _raw_header("num_samples", "Infinity"), b"\0" * (4 * N)],
    "num_samples NaN": lambda: [DATA, _raw_header("num_samples", "NaN"), b"\0" * (4 * N)],
    "timestamp string": lambda: [DATA, _raw_header("timestamp", '"1700000000000"'), b"\0" * (4 * N)],
    "deep header": lambda: [DATA, b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}", b""],
    "deep header within 64 KiB": lambda: [DATA, b'{"a":' + b"[" * 30_000 + b"]" * 30_000 + b"}", b""],
    "5000-digit integer": lambda: [DATA, _raw_header("sample_num", "9" * 5000), b"\0" * (4 * N)],
    "sample_num 2**63": lambda: [DATA, _raw_header("sample_num", str(2**63)), b"\0" * (4 * N)],
    "channel_num 2**64": lambda: [DATA, _raw_header("channel_num", str(2**64)), b"\0" * (4 * N)],
    "NaN samples": lambda: [DATA, _raw_header("sample_num", "500"), np.full(N, np.nan, "<f4").tobytes()],
    "3 MiB payload": lambda: [DATA, _raw_header("sample_num", "500"), b"\0" * (3 << 20)],
    "num_samples 10**9": lambda: [DATA, _raw_header("num_samples", str(10**9)), b"\0" * (4 * N)],
}


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_a_hostile_message_is_counted_and_reception_goes_on(kind, rig):
    plugin, make, rec = rig
    sc = make(heartbeat_s=0.2)
    acq = Acquisition(plugin, C)
    for b in range(3):
        acq.block(b * N, N)
    beats = sc.snapshot()["heartbeats"]
    plugin.send(HOSTILE[kind]())
    for b in range(3, 8):
        acq.block(b * N, N)
    assert wait_for(lambda: sc.snapshot()["messages"] == 8 * C + 1)
    assert wait_for(lambda: sc.snapshot()["heartbeats"] > beats, 30)  # heartbeats go on with reception
    stats = sc.stop()
    assert stats["malformed"] == 1 and sum(stats["malformed_reasons"].values()) == 1, stats["malformed_reasons"]
    assert stats["samples_in"] == stats["output_samples"] == 8 * N and stats["internal_errors"] == 0
    assert stats["fatal"] is None and stats["thread_errors"] == 0 and stats["thread_restarts"] == 0
    assert stats["threads"]["openephys-receiver"]["state"] == "stopped"
    assert stats["restarts"] == stats["jumps"] == 0 and stats["recordings"] == 1
    check_all_recorded(rec, acq.sent)


def test_a_sample_num_jump_of_10_to_the_12_starts_a_new_acquisition_without_allocating(rig):
    plugin, make, rec = rig
    sc = make()
    acq = Acquisition(plugin, C)
    peak0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for b in range(4):
        acq.block(b * N, N)
    for b in range(4):
        acq.block(10**12 + b * N, N)
    assert wait_for(lambda: sc.snapshot()["messages"] == 8 * C)
    stats = sc.stop()
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak0 < 500 * 1024  # KiB: nothing in proportion
    assert stats["jumps"] == 1 and stats["dropped"] == stats["dropped_samples"] == 0 and stats["sample_gaps"] == 0
    assert stats["recordings"] == 2 and stats["output_samples"] == 8 * N
    recs = raw_recordings(rec)
    assert [int(r.sample_numbers[0]) for r in recs] == [0, 10**12] and [r.n_samples for r in recs] == [4 * N, 4 * N]
    check_all_recorded(rec, acq.sent)


@pytest.mark.parametrize("stray", [5000, 1000, C])
def test_a_stray_channel_num_does_not_restart_the_stream(stray, rig):
    plugin, make, rec = rig
    sc = make()  # no --channels: the count is learned
    acq = Acquisition(plugin, C)
    for b in range(10):
        extra = encode_data(acq.enc.message_num, "ProbeA-AP", stray, "X", b * N, 30000.0, np.ones(N, np.float32))
        acq.block(b * N, N, extra=[extra] if b == 5 else None)
        if b == 5:
            acq.enc.message_num += 1
    assert wait_for(lambda: sc.snapshot()["messages"] == 10 * C + 1)
    stats = sc.stop()
    assert stats["channels"] == C and stats["restarts"] == 0 and stats["channel_changes"] == 0
    assert stats["malformed"] == 1 and stats["stray_channels"] == (0 if stray >= 4096 else 1)
    assert stats["recordings"] == 1 and stats["output_samples"] == 10 * N
    check_all_recorded(rec, acq.sent)


def test_a_growing_channel_count_keeps_every_message(rig):
    plugin, make, rec = rig
    sc = make()
    small = Acquisition(plugin, C)
    for b in range(10):
        small.block(b * N, N)
    big = Acquisition(plugin, 2 * C)
    big.enc.message_num = small.enc.message_num
    for b in range(10, 20):
        big.block(b * N, N)
    assert wait_for(lambda: sc.snapshot()["messages"] == 30 * C)
    stats = sc.stop()
    assert stats["channel_changes"] == 1 and stats["malformed"] == 0 and stats["missing_channels"] == 0
    assert stats["messages"] == stats["data_messages"] == 10 * C + 10 * 2 * C
    assert [(r.n_channels, r.n_samples) for r in raw_recordings(rec)] == [(C, 10 * N), (2 * C, 10 * N)]
    check_all_recorded(rec, {**small.sent, **big.sent})


@pytest.mark.parametrize("how", ["message_num back to 0", "sample_num falls back", "more channels"])
def test_a_restart_writes_out_the_blocks_waiting_for_channels_filled_and_flagged(how, rig):
    plugin, make, rec = rig
    sc = make()
    first = Acquisition(plugin, C)
    for b in range(12):
        first.block(b * N, N, skip=(5,) if b >= 9 else ())  # the last three blocks wait for channel 5
    assert wait_for(lambda: sc.snapshot()["samples_in"] == 9 * N)
    second = Acquisition(plugin, 2 * C if how == "more channels" else C)
    if how != "message_num back to 0":
        second.enc.message_num = first.enc.message_num
    start = 12 * N if how == "more channels" else 0
    for b in range(8):
        second.block(start + b * N, N)
    assert wait_for(lambda: sc.snapshot()["messages"] == plugin.sent)
    stats = sc.stop()
    assert stats["missing_channels"] == 3 and stats["filled_blocks"] == 3 and stats["malformed"] == 0
    assert stats["restarts"] + stats["channel_changes"] == 1 and stats["output_samples"] == 20 * N
    recs = raw_recordings(rec)
    assert [r.n_samples for r in recs] == [12 * N, 8 * N]
    raw = recs[0].read_raw()
    assert np.all(raw[9 * N:, 5] == 0)  # filled ...
    assert [(f["sample_num"], f["samples"], f["channels"]) for f in filled_flags(rec)] == \
        [(b * N, N, [5]) for b in (9, 10, 11)]  # ... and flagged
    for b in (9, 10, 11):  # the channels that came are recorded as they came
        first.sent[b * N] = np.delete(first.sent[b * N], 5, axis=0)
    check_all_recorded(rec, {k: v for k, v in first.sent.items() if v.shape[0] == C})
    check_all_recorded(rec, second.sent)
    got = raw[9 * N:].astype(np.float64) * 0.195
    np.testing.assert_allclose(np.delete(got, 5, axis=1)[:N], first.sent[9 * N].T, atol=1e-3)


def test_a_counter_falling_back_to_0_keeps_every_sample_live_and_recorded(small_recording, tiny_models, ports, tmp_path):
    """Open Ephys plugin-GUI #623 rebuilt: 768 samples with a stale counter, then the counter starts at 0."""
    from livedenoise.io.writers_ephys import write_openephys
    from livedenoise.stream.offline import denoise_array
    from livedenoise.stream.openephys.replay import OpenEphysReplay

    src = open_recording(small_recording)
    n = src.n_samples
    sn = np.concatenate([69299863 + np.arange(768), np.arange(n - 768)]).astype(np.int64)
    write_openephys(tmp_path / "jumpback", src.read(), src.sample_rate, src.bit_volts, src.channel_names,
                    sample_numbers=sn)
    rec = open_recording(tmp_path / "jumpback")
    data_port, _ = ports
    sc = start_sidecar(tiny_models["block-ephys"], data_port, None, record=tmp_path / "live", idle_flush_s=1.0)
    rp = OpenEphysReplay(rec, data_port, block=1024, speed=0, wait=300)
    th = threading.Thread(target=rp.run, daemon=True)
    th.start()
    th.join(120)
    rp.close()
    assert wait_for(lambda: sc.snapshot()["output_samples"] >= n, 120)
    stats = sc.stop()
    assert stats["samples_in"] == stats["output_samples"] == n and stats["restarts"] == 1
    assert stats["partial_first"] == 0 and stats["late"] == 0 and stats["malformed"] == 0
    eng = open_ephys_engine(tiny_models["block-ephys"], "torch")
    ref = denoise_array(eng, rec.read(), sample_numbers=sn)
    for folder, (a, b) in (("live", (0, 768)), ("live/segment2", (768, n))):
        raw = open_recording(tmp_path / folder / "raw")
        den = open_recording(tmp_path / folder / "denoised")
        assert np.array_equal(np.asarray(raw.sample_numbers), sn[a:b])
        assert np.array_equal(np.asarray(den.sample_numbers), sn[a:b])
        assert np.array_equal(raw.read_raw(), rec.read_raw(a, b))
        np.testing.assert_allclose(den.read(), ref[a:b], atol=0.195 / 2 + 1e-4)


class SlowEngine:
    """A real engine behind a slow call (a GPU busy elsewhere): the sidecar falls behind and must not lose data."""

    def __init__(self, eng, delay):
        self.eng, self.card, self.delay = eng, eng.card, delay

    def run(self, x, out=None):
        time.sleep(self.delay)
        return self.eng.run(x)


def test_stop_after_idle_counts_from_the_last_message_received_and_processes_everything(rig, tiny_models):
    plugin, make, rec = rig
    eng = SlowEngine(open_ephys_engine(tiny_models["block-ephys"], "torch"), 0.5)
    sc = make(engine=eng, stop_after_idle=3.0, max_backlog_s=0.2)
    acq = Acquisition(plugin, C)
    for b in range(60):  # 3 s of input, each block 50 ms after the last: never idle for 3 s (the engine: 0.5 s a call)
        acq.block(b * N, N, pace=0.05)
        assert not sc._finished.is_set(), f"stopped while data was still arriving (block {b})"
    assert wait_for(sc._finished.is_set, 120)
    stats = sc.final_stats
    assert stats["samples_in"] == 60 * N and stats["unprocessed_samples"] == 0
    assert stats["processed_samples"] + stats["overflow"] + stats["failed_samples"] == 60 * N
    assert stats["overflow"] > 0 and stats["output_samples"] == stats["processed_samples"]
    assert f"overflow {stats['overflow']}" in __import__("livedenoise.stream.openephys.sidecar",
                                                         fromlist=["stats_line"]).stats_line(stats)
    check_all_recorded(rec, acq.sent)  # overflow: recorded raw all the same


def test_a_thread_that_fails_is_restarted_and_it_shows_in_the_stats(rig):
    from oeclients import SocketClient

    plugin, make, rec = rig
    sc = make(socket_port=0, socket_samples=N)
    port = sc.socket.port
    sc.socket.sock.close()  # the Ephys Socket server's listening socket fails under it
    assert wait_for(lambda: sc.snapshot()["threads"]["ephys-socket"]["restarts"] >= 1, 30)
    s = sc.snapshot()
    assert s["thread_restarts"] >= 1 and s["threads"]["ephys-socket"]["last_error"] and s["fatal"] is None
    def listening():
        import socket

        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            return True
        except OSError:
            return False

    assert wait_for(listening, 30)  # the GUI can connect again, on the same port
    assert wait_for(lambda: sc.socket.n_clients == 0, 30)  # a client that hung up is let go at once
    client = SocketClient(port, timeout=300)
    client.start()
    assert wait_for(lambda: sc.socket.n_clients == 1, 30)
    acq = Acquisition(plugin, C)
    for b in range(6):
        acq.block(b * N, N)
    assert wait_for(lambda: client.n >= 4 * N, 60)
    sc.stop()
    client.join(5)


def test_reception_that_cannot_go_on_stops_the_sidecar_and_its_heartbeats(tiny_models, ports, tmp_path):
    data_port, _ = ports
    ctx = zmq.Context()  # the sidecar's own messaging layer, torn down under it below
    plugin = Plugin(data_port)
    sc = start_sidecar(tiny_models["block-ephys"], data_port, plugin, record=tmp_path / "rec", ctx=ctx, heartbeat_s=0.1)
    acq = Acquisition(plugin, C)
    for b in range(4):
        acq.block(b * N, N)
    assert wait_for(lambda: sc.snapshot()["samples_in"] >= 3 * N)
    threading.Thread(target=ctx.term, daemon=True).start()  # every socket of the sidecar's context fails
    assert wait_for(lambda: sc._finished.is_set(), 60)
    stats = sc.final_stats
    assert stats["fatal"] and "cannot go on" in stats["fatal"]
    assert "failed" in {t["state"] for t in stats["threads"].values()}
    beats = settled(lambda: plugin.rep.count)  # a heartbeat already on its way may still be answered
    assert not wait_for(lambda: plugin.rep.count > beats, 3)  # the plugin (the GUI) no longer sees it connected
    assert stats["samples_in"] == stats["output_samples"]  # what it had received is processed and recorded
    check_all_recorded(tmp_path / "rec", {k: v for k, v in acq.sent.items() if k < stats["samples_in"]})
    plugin.close()
