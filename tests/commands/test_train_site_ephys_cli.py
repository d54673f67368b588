"""`livedenoise train --arch site-ephys` and `denoise --report` on a recording, as a user runs them."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from livedenoise.io.probe_geometry import np1_positions

C = 16


def _cli(*args, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "livedenoise", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    import probeinterface as pi

    from livedenoise.sim.ephys import simulate_ephys

    d = tmp_path_factory.mktemp("site")
    simulate_ephys(d / "rec", n_channels=C, duration=2.0, save_clean=False)
    probe = pi.Probe(ndim=2, si_units="um")
    probe.set_contacts(positions=np1_positions(C), shapes="square", shape_params={"width": 12})
    probe.set_device_channel_indices(np.arange(C))
    pi.write_probeinterface(d / "probe.json", probe)
    return d


def test_training_needs_the_geometry_and_reads_it_from_a_probe_file(rec, tmp_path):
    r = _cli("train", rec / "rec", "--arch", "site-ephys", "--steps", "3", "--out", tmp_path / "x.pt")
    assert r.returncode == 2 and "--probe FILE" in r.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "x.pt").exists()
    r = _cli("train", rec / "rec", "--arch", "site-ephys", "--probe", rec / "probe.json", "--steps", "30",
             "--out", tmp_path / "m.pt", "--json", "--threads", "1", "--keep-noise", "0.5")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    card = out["card"]
    assert card["arch"] == "site-ephys" and card["training"]["loss"] == "nll" and card["params"]["keep_noise"] == 0.5
    assert np.allclose(card["params"]["positions"], np1_positions(C))
    assert out["val_loss"] is not None and np.isfinite(out["val_loss"])
    r = _cli("train", rec / "rec", "--arch", "site-ephys", "--probe", rec / "probe.json", "--loss", "l1",
             "--steps", "3", "--out", tmp_path / "l1.pt")
    assert r.returncode == 2 and "--loss nll" in r.stderr
    r = _cli("train", rec / "rec", "--arch", "block-ephys", "--keep-noise", "0.5", "--steps", "3", "--out", tmp_path / "b.pt")
    assert r.returncode == 2 and "--keep-noise applies to" in r.stderr


def test_denoise_report_gives_noise_and_spike_amplitude_for_a_recording(rec, tmp_path):
    r = _cli("train", rec / "rec", "--arch", "site-ephys", "--probe", rec / "probe.json", "--steps", "30",
             "--out", tmp_path / "m.pt", "--threads", "1")
    assert r.returncode == 0, r.stderr
    r = _cli("denoise", rec / "rec", tmp_path / "den", "--model", tmp_path / "m.pt", "--report", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "spike amplitude" in r.stdout and "noise" in r.stdout and "below 300 Hz" in r.stdout
    r = _cli("denoise", rec / "rec", tmp_path / "den2", "--model", tmp_path / "m.pt", "--report", "--json")
    assert r.returncode == 0, r.stderr
    q = json.loads(r.stdout)["quality"]
    assert q["noise_raw_uv"] > 0 and q["samples"] == 60000 and q["channels"] == C
