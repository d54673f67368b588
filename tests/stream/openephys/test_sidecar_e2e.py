"""A replayed recording through the sidecar equals offline denoising, sample for sample.

replay (emulated ZMQ Interface plugin) -> sidecar -> Ephys Socket client (parses
the header like the GUI) and a ZMQ Interface-format SUB client; both compared
to `denoise_recording` of the same recording, for both model families.
"""

import threading

import numpy as np
import pytest

from livedenoise.stream.ephys import denoise_recording, open_ephys_engine
from livedenoise.io.readers_ephys import open_recording
from livedenoise.stream.sinks.ephys_socket import HEADER
from livedenoise.stream.openephys.replay import OpenEphysReplay
from livedenoise.stream.openephys.sidecar import Sidecar, SidecarConfig
from livedenoise.stream.protocols.zmq_interface import DataEncoder
from oeclients import SocketClient, ZmqClient
from oerig import Plugin, start_sidecar, wait_for


def run_sidecar(rec_path, model, ports, block=1000, speed=4.0, record=None):
    """Replay the recording (`livedenoise replay`'s publisher) into a sidecar with an Ephys Socket client and a
    ZMQ Interface-format client connected from the start; returns once both have every sample."""
    rec = open_recording(rec_path)
    data_port, out_port = ports
    sc = Sidecar(SidecarConfig(model=str(model), backend="torch", input=f"tcp://127.0.0.1:{data_port}", socket_port=0,
                               zmq_output=f"tcp://127.0.0.1:{out_port}", stats_every=0, quiet=True, record=record,
                               idle_flush_s=2.0)).start()  # the tail goes out 2 s after the last block
    zc = ZmqClient(f"tcp://127.0.0.1:{out_port}")
    assert zc.connected
    zc.start()
    sock = SocketClient(sc.socket.port)
    sock.start()
    assert wait_for(lambda: sc.socket.n_clients == 1, 120)
    rp = OpenEphysReplay(rec, data_port, block=block, speed=speed, wait=300)
    th = threading.Thread(target=rp.run, daemon=True)
    th.start()
    th.join(300)
    rp.close()
    n, C = rec.n_samples, rec.n_channels
    assert wait_for(lambda: sc.snapshot()["output_samples"] >= n and sock.n >= n and zc.n_samples(C) >= n, 120)
    stats = sc.stop()
    sock.join(60)
    zc.done.set()
    zc.join(60)
    return rec, sc, stats, sock, zc


def send_blocks(plugin, rec, a, b, block=1000, enc=None):
    """Publish samples a..b of `rec` as the plugin does (blocks of `block`); returns the encoder (message numbers)."""
    enc = enc or DataEncoder(rec.stream_name or "example_data", list(rec.channel_names), rec.sample_rate)
    sn = np.asarray(rec.sample_numbers)
    for s in range(a, b, block):
        for parts in enc.encode_block(int(sn[s]), rec.read(s, min(b, s + block)).T):
            plugin.send(parts)
    return enc


@pytest.mark.parametrize("arch", ["block-ephys", "interp-ephys"])
def test_replay_through_sidecar_equals_offline_denoise(arch, small_recording, tiny_models, ports, tmp_path):
    model = tiny_models[arch]
    rec, sc, stats, sock, zc = run_sidecar(small_recording, model, ports, record=str(tmp_path / "live"))
    offline = tmp_path / "offline"
    denoise_recording(rec, model, offline, engine=open_ephys_engine(model, "torch"), progress=False)
    ref = open_recording(offline).read()  # int16-quantised file
    ref_f = _float_reference(rec, model)
    n, C = rec.n_samples, rec.n_channels
    assert stats["samples_in"] == n and stats["output_samples"] == n
    assert stats["malformed"] == stats["gaps"] == stats["missing_channels"] == stats["restarts"] == 0
    assert stats["heartbeats"] >= 1 and stats["heartbeat_replies"] >= 1
    # Ephys Socket: fixed header, float32 channel-major, every sample
    assert len(sock.headers) == 1
    (off, nbytes, depth, elem, nch, ns), = sock.headers
    assert (off, depth, elem, nch, ns, nbytes) == (0, 5, 4, C, 1000, C * 1000 * 4)
    got = sock.samples()
    assert got.shape == (n, C)
    np.testing.assert_allclose(got, ref_f, rtol=1e-4, atol=1e-4 * 10)
    # ZMQ Interface-format output: same numbers, the input's sample numbers, message_num from 0 in order
    z = zc.samples(C)
    assert z.shape == (n, C)
    np.testing.assert_allclose(z, ref_f, rtol=1e-4, atol=1e-3)
    assert sorted(zc.got)[0] == int(rec.sample_numbers[0])
    assert zc.msgnums[0] == 0 and zc.msgnums == sorted(zc.msgnums)
    # the offline file (int16) matches within half a bit
    assert np.abs(ref - ref_f).max() <= 0.195 / 2 + 1e-4
    # --record wrote raw and denoised Binary recordings of the same length
    raw = open_recording(tmp_path / "live" / "raw")
    den = open_recording(tmp_path / "live" / "denoised")
    assert raw.n_samples == den.n_samples == n
    np.testing.assert_allclose(raw.read(), rec.read(), atol=0.2)
    np.testing.assert_allclose(den.read(), ref, atol=0.2)
    assert np.array_equal(np.asarray(den.sample_numbers), np.asarray(rec.sample_numbers))


def _float_reference(rec, model):
    from livedenoise.stream.offline import denoise_array

    return denoise_array(open_ephys_engine(model, "torch"), rec.read())


def test_gui_connecting_late_gets_a_consistent_stream(small_recording, tiny_models, ports):
    model = tiny_models["block-ephys"]
    rec = open_recording(small_recording)
    n, half = rec.n_samples, rec.n_samples // 2000 * 1000
    data_port, _ = ports
    plugin = Plugin(data_port)
    sc = start_sidecar(model, data_port, plugin, socket_port=0, idle_flush_s=600)  # no pause ends the stream
    try:
        enc = send_blocks(plugin, rec, 0, half)
        assert wait_for(lambda: sc.snapshot()["output_samples"] >= 1000, 120)  # data is flowing
        sock = SocketClient(sc.socket.port)  # the GUI connects now: it gets packets from then on
        sock.start()
        assert wait_for(lambda: sc.socket.n_clients == 1, 120)
        send_blocks(plugin, rec, half, n, enc=enc)
        assert wait_for(lambda: sc.snapshot()["messages"] == -(-n // 1000) * rec.n_channels, 120)  # all received
        assert sc.stop()["output_samples"] == n  # the tail goes out at the stop
        sock.join(60)
    finally:
        plugin.close()
    ref = _float_reference(rec, model)
    got = sock.samples()
    assert n - half <= got.shape[0] < n and got.shape[0] % 1000 == 0
    assert len(sock.headers) == 1
    # the late client's stream is the tail of the full one, packet-aligned
    np.testing.assert_allclose(got, ref[rec.n_samples - got.shape[0]:], rtol=1e-4, atol=1e-3)


def test_gui_disconnect_and_reconnect_does_not_disturb_the_sidecar(small_recording, tiny_models, ports):
    model = tiny_models["block-ephys"]
    rec = open_recording(small_recording)
    data_port, _ = ports
    n = rec.n_samples
    plugin = Plugin(data_port)
    sc = start_sidecar(model, data_port, plugin, socket_port=0, idle_flush_s=600)  # no pause ends the stream
    try:
        first = SocketClient(sc.socket.port, stop_after=2000)  # reads two packets, then hangs up
        first.start()
        assert wait_for(lambda: sc.socket.n_clients == 1, 120)
        enc = send_blocks(plugin, rec, 0, 4000)
        first.join(120)
        assert not first.is_alive()
        assert wait_for(lambda: sc.socket.n_clients == 0, 120)  # the hang-up is noticed
        second = SocketClient(sc.socket.port)
        second.start()
        assert wait_for(lambda: sc.socket.n_clients == 1, 120)
        send_blocks(plugin, rec, 4000, n, enc=enc)
        assert wait_for(lambda: sc.snapshot()["messages"] == -(-n // 1000) * rec.n_channels, 120)  # all received
        stats = sc.stop()  # the tail goes out at the stop
        second.join(60)
    finally:
        plugin.close()
    assert stats["output_samples"] == rec.n_samples
    assert first.n == 2000 and second.n > 0
    assert len(first.headers) == 1 and first.headers == second.headers
    assert HEADER.size == 22
