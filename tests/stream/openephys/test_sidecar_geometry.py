"""The live sidecar with a model made for one probe's geometry (site-ephys): runs on that probe, refuses another."""

import json
import os
import subprocess
import sys

import pytest

from livedenoise.io.probe_geometry import np1_positions
from livedenoise.stream.loopback import free_port

C = 16


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    from livedenoise.sim.ephys import simulate_ephys

    d = tmp_path_factory.mktemp("geom")
    simulate_ephys(d / "rec", n_channels=C, duration=0.5, save_clean=False)
    return d / "rec"


def _model(path, n):
    from livedenoise.models.checkpoint import save_checkpoint
    from livedenoise.models.nets import site_ephys
    from livedenoise.models.registry import build_network

    card = site_ephys.make_card(n, 30, 0, 1, "fast", norm_std=10.0, positions=np1_positions(n))  # causal
    save_checkpoint(path, card, build_network(card).state_dict())
    return path


def _run(model, rec, tmp_path, *extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    port = free_port(span=2)  # data + heartbeat
    side = subprocess.Popen(
        [sys.executable, "-m", "livedenoise", "sidecar", "openephys", "--model", str(model), "--input",
         f"tcp://127.0.0.1:{port}", "--socket-port", "-1", "--zmq-output", "off", "--duration", "600",
         "--stop-after-idle", "5", "--stats-every", "0", "--record", str(tmp_path / "live"), "--json", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        rp = subprocess.run(
            [sys.executable, "-m", "livedenoise", "replay", "openephys", str(rec), "--port", str(port),
             "--speed", "2", "--wait", "300", "--block", "500"], capture_output=True, text=True, env=env, timeout=400)
        assert rp.returncode == 0, rp.stderr
        out, err = side.communicate(timeout=400)
    finally:
        side.kill()
    return side.returncode, out, err


def test_a_site_model_denoises_live_the_probe_it_was_made_for_and_the_recordings_keep_the_settings(rec, tmp_path):
    from livedenoise.io.readers_ephys import open_recording

    settings = tmp_path / "settings.xml"
    settings.write_text("<SETTINGS><INFO><VERSION>0.6.7</VERSION></INFO></SETTINGS>\n")
    code, out, err = _run(_model(tmp_path / "m.pt", C), rec, tmp_path, "--record-settings", str(settings))
    assert code == 0, err
    for which in ("raw", "denoised"):  # the acquisition's settings (probe geometry) beside both recordings
        assert (tmp_path / "live" / which / "Record Node 101" / "settings.xml").read_bytes() == settings.read_bytes()
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["samples_in"] == stats["output_samples"] == 15000 and stats["lag_samples"] == 0
    assert open_recording(tmp_path / "live" / "denoised").shape == (15000, C)


def test_a_site_model_for_another_channel_count_is_refused_and_the_raw_data_recorded(rec, tmp_path):
    from livedenoise.io.readers_ephys import open_recording

    code, _, err = _run(_model(tmp_path / "m32.pt", 2 * C), rec, tmp_path)
    assert code == 2, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("livedenoise sidecar: error: ") and f"{2 * C} channels" in last
    assert not (tmp_path / "live" / "denoised").exists()
    assert open_recording(tmp_path / "live" / "raw").shape[0] > 0
