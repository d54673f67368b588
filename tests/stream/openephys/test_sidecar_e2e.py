"""A replayed recording through the sidecar equals offline denoising, sample for sample.

replay (emulated ZMQ Interface plugin) -> sidecar -> Ephys Socket client (parses
the header like the GUI) and a ZMQ Interface-format SUB client; both compared
to `denoise_recording` of the same recording, for both model families.
"""

import threading
import time

import numpy as np
import pytest

from livedenoise.stream.ephys import denoise_recording, open_ephys_engine
from livedenoise.io.readers_ephys import open_recording
from livedenoise.stream.sinks.ephys_socket import HEADER
from livedenoise.stream.openephys.replay import OpenEphysReplay
from livedenoise.stream.openephys.sidecar import Sidecar, SidecarConfig
from oeclients import SocketClient, ZmqClient


def run_sidecar(rec_path, model, ports, block=1000, speed=4.0, record=None, late=False, tmp=None):
    rec = open_recording(rec_path)
    data_port, out_port = ports
    sc = Sidecar(SidecarConfig(model=str(model), backend="torch", input=f"tcp://127.0.0.1:{data_port}", socket_port=0,
                               zmq_output=f"tcp://127.0.0.1:{out_port}", stats_every=0, quiet=True, record=record,
                               idle_flush_s=0.3)).start()
    zc = ZmqClient(f"tcp://127.0.0.1:{out_port}")
    zc.start()
    sock = None
    if not late:
        sock = SocketClient(sc.socket.port)
        sock.start()
    time.sleep(0.3)
    rp = OpenEphysReplay(rec, data_port, block=block, speed=speed, wait=5)
    th = threading.Thread(target=rp.run, daemon=True)
    th.start()
    if late:  # the GUI connects once data is flowing: it gets packets from then on
        while sc.snapshot()["output_samples"] == 0 and th.is_alive():
            time.sleep(0.01)
        sock = SocketClient(sc.socket.port)
        sock.start()
    th.join(60)
    rp.close()
    t0 = time.monotonic()
    while sc.snapshot()["output_samples"] < rec.n_samples and time.monotonic() - t0 < 60:
        time.sleep(0.05)
    time.sleep(0.3)
    stats = sc.stop()
    sock.join(5)
    zc.done.set()
    zc.join(5)
    return rec, sc, stats, sock, zc


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
    rec, sc, stats, sock, zc = run_sidecar(small_recording, model, ports, speed=0.5, late=True)
    ref = _float_reference(rec, model)
    got = sock.samples()
    assert 0 < got.shape[0] <= rec.n_samples and got.shape[0] % 1000 == 0
    assert len(sock.headers) == 1
    # the late client's stream is the tail of the full one, packet-aligned
    np.testing.assert_allclose(got, ref[rec.n_samples - got.shape[0]:], rtol=1e-4, atol=1e-3)


def test_gui_disconnect_and_reconnect_does_not_disturb_the_sidecar(small_recording, tiny_models, ports):
    model = tiny_models["block-ephys"]
    rec = open_recording(small_recording)
    data_port, out_port = ports
    sc = Sidecar(SidecarConfig(model=str(model), backend="torch", input=f"tcp://127.0.0.1:{data_port}", socket_port=0,
                               zmq_output=None, stats_every=0, quiet=True, idle_flush_s=0.3)).start()
    first = SocketClient(sc.socket.port, stop_after=2000)  # reads two packets, then hangs up
    first.start()
    time.sleep(0.2)
    rp = OpenEphysReplay(rec, data_port, block=1000, speed=1.0, wait=5)
    th = threading.Thread(target=rp.run, daemon=True)
    th.start()
    first.join(10)
    second = SocketClient(sc.socket.port)
    second.start()
    th.join(30)
    rp.close()
    t0 = time.monotonic()
    while sc.snapshot()["output_samples"] < rec.n_samples and time.monotonic() - t0 < 30:
        time.sleep(0.05)
    stats = sc.stop()
    second.join(5)
    assert stats["output_samples"] == rec.n_samples
    assert first.n == 2000 and second.n > 0
    assert len(first.headers) == 1 and first.headers == second.headers
    assert HEADER.size == 22
