"""`livedenoise sidecar openephys` and `livedenoise replay openephys` as a user runs them."""

import json
import os
import subprocess
import sys

import pytest

from livedenoise.cli import main
from livedenoise.stream.loopback import free_port

C = 16


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from livedenoise.models.nets import block_ephys
    from livedenoise.models.checkpoint import save_checkpoint
    from livedenoise.models.registry import build_network
    from livedenoise.sim.ephys import simulate_ephys

    d = tmp_path_factory.mktemp("cli_ephys")
    simulate_ephys(d / "rec", n_channels=C, duration=0.5, save_clean=False)
    card = block_ephys.make_card(C, 30, 30, 1, "fast", norm_std=10.0)
    save_checkpoint(d / "m.pt", card, build_network(card).state_dict())
    return d


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def test_sidecar_and_replay_from_the_command_line(setup, tmp_path):
    d = setup
    data = free_port(span=5)  # data + heartbeat, ZMQ output + its heartbeat, Ephys Socket
    out, sock_port = data + 2, data + 4
    side = subprocess.Popen(
        [sys.executable, "-m", "livedenoise", "sidecar", "openephys", "--model", str(d / "m.pt"), "--input",
         f"tcp://127.0.0.1:{data}", "--socket-port", str(sock_port), "--zmq-output", f"tcp://127.0.0.1:{out}",
         "--duration", "600", "--stop-after-idle", "5", "--stats-every", "0", "--json", "--record", str(tmp_path / "live"), "--idle-flush", "0.3",
         "--stats-file", str(tmp_path / "stats.jsonl")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        rp = subprocess.run(
            [sys.executable, "-m", "livedenoise", "replay", "openephys", str(d / "rec"), "--port", str(data), "--speed", "2",
             "--wait", "300", "--block", "500", "--json"],
            capture_output=True, text=True, env=_env(), timeout=400)
        assert rp.returncode == 0, rp.stderr
        summary = json.loads(rp.stdout)
        assert summary["samples"] == 15000 and summary["messages"] == 30 * C
        stdout, stderr = side.communicate(timeout=400)
    finally:
        side.kill()
    assert side.returncode == 0, stderr
    stats = json.loads(stdout.strip().splitlines()[-1])
    assert stats["samples_in"] == stats["output_samples"] == 15000
    assert stats["malformed"] == 0 and stats["realtime_factor"] > 0
    for key in ("latency_p50_ms", "lag_samples", "realtime_factor", "gaps", "restarts", "missing_channels", "uptime_s"):
        assert key in stats
    assert json.loads((tmp_path / "stats.jsonl").read_text().splitlines()[-1])["output_samples"] == 15000
    from livedenoise.io.readers_ephys import open_recording

    assert open_recording(tmp_path / "live" / "denoised").shape == (15000, C)
    assert open_recording(tmp_path / "live" / "raw").shape == (15000, C)


def test_sidecar_help_and_errors(setup, capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["sidecar", "--help"])
    assert "openephys" in capsys.readouterr().out
    assert main(["sidecar", "openephys", "--model", str(tmp_path / "missing.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["replay", "openephys", str(tmp_path / "nothing-here")]) == 2


@pytest.mark.parametrize("force", [False, True])
def test_a_model_trained_at_another_rate_is_refused_live_as_offline(setup, tmp_path, force):
    from livedenoise.io.readers_ephys import open_recording
    from livedenoise.models.checkpoint import load_model, save_checkpoint

    d = setup
    card, net = load_model(d / "m.pt")
    card.training = {**(card.training or {}), "sample_rate": 20000.0}  # the recording is at 30 kHz
    save_checkpoint(tmp_path / "m20k.pt", card, net.state_dict())
    data = free_port(span=2)  # data + heartbeat
    side = subprocess.Popen(
        [sys.executable, "-m", "livedenoise", "sidecar", "openephys", "--model", str(tmp_path / "m20k.pt"), "--input",
         f"tcp://127.0.0.1:{data}", "--socket-port", "-1", "--zmq-output", "off", "--duration", "600",
         "--stop-after-idle", "5", "--stats-every", "0", "--record", str(tmp_path / "live"), "--quiet",
         *(["--force-rate"] if force else [])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        rp = subprocess.run(
            [sys.executable, "-m", "livedenoise", "replay", "openephys", str(d / "rec"), "--port", str(data),
             "--speed", "2", "--wait", "300", "--block", "500"], capture_output=True, text=True, env=_env(), timeout=400)
        assert rp.returncode == 0, rp.stderr
        _, stderr = side.communicate(timeout=400)
    finally:
        side.kill()
    if force:
        assert side.returncode == 0, stderr
        assert open_recording(tmp_path / "live" / "denoised").shape[0] > 0
        assert "--force-rate" in stderr
    else:
        assert side.returncode == 2, stderr
        last = stderr.strip().splitlines()[-1]
        assert last.startswith("livedenoise sidecar: error: ") and "20000 Hz" in last and "--force-rate" in last
        assert not (tmp_path / "live" / "denoised").exists()
    assert open_recording(tmp_path / "live" / "raw").shape[0] > 0  # the raw data are recorded either way
