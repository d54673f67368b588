"""One gap/restart policy live and offline: a replayed recording through the sidecar equals `denoise_recording`.

For both model families: (a) sample numbers with a 3000-sample gap (the raw
recording written live holds exactly the received samples, no invented zeros,
and the live denoised output equals offline denoising of the file and of the
recorded raw), (b) an acquisition that ends in the middle of the last window,
(c) an acquisition that restarts (the sample counter falls back). Real ZeroMQ
sockets on loopback, real files; every wait is for a condition.
"""

import threading

import numpy as np
import pytest

from livedenoise.io.readers_ephys import open_recording
from livedenoise.io.writers_ephys import write_openephys
from livedenoise.stream.ephys import denoise_recording, open_ephys_engine
from livedenoise.stream.offline import denoise_array
from livedenoise.stream.openephys.replay import OpenEphysReplay
from livedenoise.stream.openephys.sidecar import Sidecar, SidecarConfig
from oeclients import SocketClient, ZmqClient
from oerig import wait_for

ARCHS = ["block-ephys", "interp-ephys"]
BLOCK = 1000
TOL = dict(rtol=1e-5, atol=1e-5)


def recording_with(src, tmp, name, sample_numbers):
    rec = open_recording(src)
    path = tmp / name
    write_openephys(path, rec.read(), rec.sample_rate, rec.bit_volts, rec.channel_names, sample_numbers=sample_numbers)
    return open_recording(path)


def live(rec, model, ports, record, n_samples=None):
    """Replay `rec` (as fast as possible) into a sidecar; returns (stats, socket client, zmq client, samples sent)."""
    data_port, out_port = ports
    sc = Sidecar(SidecarConfig(model=str(model), backend="torch", input=f"tcp://127.0.0.1:{data_port}", socket_port=0,
                               zmq_output=f"tcp://127.0.0.1:{out_port}", stats_every=0, quiet=True, record=str(record),
                               idle_flush_s=1.0)).start()
    zc = ZmqClient(f"tcp://127.0.0.1:{out_port}")
    assert zc.connected
    zc.start()
    sock = SocketClient(sc.socket.port)
    sock.start()
    assert wait_for(lambda: sc.socket.n_clients >= 1, 120)
    rp = OpenEphysReplay(rec, data_port, block=BLOCK, speed=0, wait=300, n_samples=n_samples)
    th = threading.Thread(target=rp.run, daemon=True)
    th.start()
    th.join(300)
    rp.close()
    sent = rp.sent_samples
    # everything out, including the tail flushed once the input went idle
    assert wait_for(lambda: sc.snapshot()["output_samples"] >= sent and sc.receiver.asm.samples_in >= sent, 120)
    assert wait_for(lambda: zc.n_samples(rec.n_channels) >= sent, 120)
    stats = sc.stop()
    sock.join(60)
    zc.done.set()
    zc.join(60)
    return stats, sock, zc, sent


def check_recorded(tmp, folder, rec_part, live_part, eng, model):
    """The live raw recording holds exactly what was sent; offline of it equals the live denoised recording."""
    raw = open_recording(tmp / folder / "raw")
    den = open_recording(tmp / folder / "denoised")
    assert raw.n_samples == den.n_samples == len(rec_part[0])
    assert np.array_equal(np.asarray(raw.sample_numbers), rec_part[0])
    assert np.array_equal(np.asarray(den.sample_numbers), rec_part[0])
    assert np.array_equal(raw.read_raw(), rec_part[1])  # int16 for int16: nothing invented, nothing altered
    np.testing.assert_allclose(den.read(), live_part, atol=0.195 / 2 + 1e-4)
    denoise_recording(raw, model, tmp / f"{folder}_offline", engine=eng, progress=False)
    off = open_recording(tmp / f"{folder}_offline")
    assert np.array_equal(np.asarray(off.sample_numbers), rec_part[0])
    # offline on the recorded raw == live denoised recording (int16; a float rounding may flip the last bit)
    d = np.abs(off.read_raw().astype(np.int32) - den.read_raw().astype(np.int32))
    assert d.max() <= 1 and (d == 0).mean() > 0.999


@pytest.mark.parametrize("arch", ARCHS)
def test_gap_in_sample_numbers_live_equals_offline_and_raw_is_exactly_what_arrived(arch, small_recording, tiny_models,
                                                                                  ports, tmp_path):
    model = tiny_models[arch]
    eng = open_ephys_engine(model, "torch")
    n = open_recording(small_recording).n_samples
    sn = np.arange(n, dtype=np.int64) + 100
    sn[5500:] += 3000  # 3000 samples never acquired, in the middle of a block
    rec = recording_with(small_recording, tmp_path, "gap", sn)
    stats, sock, zc, sent = live(rec, model, ports, tmp_path / "live")
    x = rec.read()
    ref = denoise_array(eng, x, sample_numbers=sn)
    assert sent == n and stats["samples_in"] == n and stats["output_samples"] == n
    assert stats["dropped_samples"] == 3000 and stats["sample_gaps"] == 1 and stats["restarts"] == 0
    assert stats["segments"] == 2 and stats["recordings"] == 1
    # Ephys Socket (no sample numbers): the received samples, denoised, nothing inserted
    np.testing.assert_allclose(sock.samples(), ref[:sock.samples().shape[0]], **TOL)
    assert sock.samples().shape[0] == n  # 12000 = 12 packets of 1000
    # ZMQ Interface output: the true sample numbers, the gap included
    zsn, z = zc.stream(rec.n_channels)
    assert np.array_equal(zsn, sn)
    np.testing.assert_allclose(z, ref, **TOL)
    # offline of the file == live
    denoise_recording(rec, model, tmp_path / "offline", engine=eng, progress=False)
    off = open_recording(tmp_path / "offline")
    assert np.array_equal(np.asarray(off.sample_numbers), sn)
    np.testing.assert_allclose(off.read(), ref, atol=0.195 / 2 + 1e-4)
    check_recorded(tmp_path, "live", (sn, rec.read_raw()), ref, eng, model)
    # and it is not what running the window across the gap gives
    assert np.abs(ref - denoise_array(eng, x)).max() > 1e-3


@pytest.mark.parametrize("arch", ARCHS)
def test_acquisition_ending_mid_window_equals_offline(arch, small_recording, tiny_models, ports, tmp_path):
    model = tiny_models[arch]
    eng = open_ephys_engine(model, "torch")
    rec = open_recording(small_recording)
    n = 6017  # the last block has 17 samples: fewer than the model's lag
    stats, sock, zc, sent = live(rec, model, ports, tmp_path / "live", n_samples=n)
    ref = denoise_array(eng, rec.read(0, n))
    assert sent == n and stats["output_samples"] == n and stats["segments"] == 1
    zsn, z = zc.stream(rec.n_channels)
    assert np.array_equal(zsn, np.asarray(rec.sample_numbers[:n]))
    np.testing.assert_allclose(z, ref, **TOL)
    got = sock.samples()  # whole packets only: the last partial packet waits for data that never comes
    assert got.shape[0] == 6000
    np.testing.assert_allclose(got, ref[:6000], **TOL)
    denoise_recording(rec, model, tmp_path / "offline", engine=eng, stop=n, progress=False)
    np.testing.assert_allclose(open_recording(tmp_path / "offline").read(), ref, atol=0.195 / 2 + 1e-4)
    check_recorded(tmp_path, "live", (np.asarray(rec.sample_numbers[:n]), rec.read_raw(0, n)), ref, eng, model)


@pytest.mark.parametrize("arch", ARCHS)
def test_restarted_acquisition_live_equals_offline(arch, small_recording, tiny_models, ports, tmp_path):
    model = tiny_models[arch]
    eng = open_ephys_engine(model, "torch")
    n = open_recording(small_recording).n_samples
    h = 6500  # the counter falls back mid-block
    sn = np.concatenate([np.arange(7000, 7000 + h), np.arange(0, n - h)]).astype(np.int64)
    rec = recording_with(small_recording, tmp_path, "restart", sn)
    stats, sock, zc, sent = live(rec, model, ports, tmp_path / "live")
    ref = denoise_array(eng, rec.read(), sample_numbers=sn)
    assert stats["samples_in"] == n and stats["output_samples"] == n
    assert stats["restarts"] == 1 and stats["dropped_samples"] == 0 and stats["late"] == 0
    assert stats["segments"] == 2 and stats["recordings"] == 2
    zsn, z = zc.stream(rec.n_channels)
    assert np.array_equal(zsn, sn)
    np.testing.assert_allclose(z, ref, **TOL)
    got = sock.samples()
    np.testing.assert_allclose(got, ref[:got.shape[0]], **TOL)
    # offline of the whole file (its sample numbers fall back) == live
    denoise_recording(rec, model, tmp_path / "offline", engine=eng, progress=False)
    np.testing.assert_allclose(open_recording(tmp_path / "offline").read(), ref, atol=0.195 / 2 + 1e-4)
    # live: the restart opened a new recording folder; each equals offline of its raw
    raw = rec.read_raw()
    check_recorded(tmp_path, "live", (sn[:h], raw[:h]), ref[:h], eng, model)
    check_recorded(tmp_path, "live/segment2", (sn[h:], raw[h:]), ref[h:], eng, model)
