"""Self-supervised ephys training and file denoising in every format (same length, same format out)."""

import numpy as np
import pytest

from livedenoise.models.checkpoint import load_model
from livedenoise.stream.ephys import denoise_recording
from livedenoise.io.readers_ephys import open_recording
from livedenoise.sim.ephys import simulate_ephys, simulate_ephys_arrays
from livedenoise.train.ephys import train_ephys
from livedenoise.io.writers_ephys import write_openephys

C = 16


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    d = tmp_path_factory.mktemp("sim_ephys")
    s = simulate_ephys(d, n_channels=C, duration=0.5, seed=1)
    return d, s


def test_simulator_has_local_spikes_and_realistic_noise(sim):
    d, s = sim
    rec = open_recording(d)
    clean = open_recording(d / "clean")
    assert rec.shape == (15000, C) and rec.sample_rate == 30000.0 and rec.bit_volts[0] == 0.195
    noise = rec.read() - clean.read()
    assert 6 < noise.std() < 14  # µV rms, Neuropixels-like
    t = s.truth
    assert len(t.spike_samples) > 0 and np.all(np.diff(t.spike_samples) >= 0)
    spread = (t.footprints > 0).sum(1)
    assert spread.min() >= 1 and spread.max() < C  # a unit covers neighbouring sites, not the whole probe
    assert np.all(t.templates.min(1) == pytest.approx(-1.0))
    noisy, clean_arr, truth = simulate_ephys_arrays(8, 3000, seed=2)
    assert noisy.shape == clean_arr.shape == (3000, 8)
    # thermal noise is independent across sites; the background is correlated between neighbours
    bg = noisy - clean_arr
    assert abs(np.corrcoef(bg[:, 0], bg[:, 2])[0, 1]) > abs(np.corrcoef(bg[:, 0], bg[:, 7])[0, 1]) - 0.05


@pytest.mark.parametrize("arch,kw", [("block-ephys", {"crop": 128, "batch": 2}), ("interp-ephys", {"pre": 4, "post": 2, "batch": 8})])
def test_train_saves_a_card_and_denoise_writes_the_same_format(arch, kw, sim, tmp_path):
    d, _ = sim
    model = tmp_path / "m.pt"
    card, hist = train_ephys(d, arch, model, steps=12, log=lambda m: None, **kw)
    card2, net = load_model(model)
    assert card2.arch == arch and card2.modality == "ephys" and card2.norm_std > 0
    assert card2.training["steps_done"] == 12 and np.isfinite(hist["loss"]).all()
    # what the data were: a model is checked against the sample rate it was trained at (`denoise` refuses others)
    assert card2.training["sample_rate"] == 30000.0 and card2.training["stream"] == "ProbeA-AP"
    rep = denoise_recording(d, model, tmp_path / "out", progress=False)
    out = open_recording(tmp_path / "out")
    src = open_recording(d)
    assert out.shape == src.shape and rep["samples"] == src.n_samples
    assert np.array_equal(out.sample_numbers, src.sample_numbers)
    assert list(out.bit_volts) == list(src.bit_volts) and out.stream_name == src.stream_name


def test_spikeglx_and_dat_inputs_are_written_back_in_their_format(tmp_path):
    from livedenoise.models.nets import block_ephys
    from livedenoise.models.checkpoint import save_checkpoint
    from livedenoise.models.registry import build_network

    card = block_ephys.make_card(6, 5, 2, 1, "fast", norm_std=20.0)
    save_checkpoint(tmp_path / "m.pt", card, build_network(card).state_dict())
    raw = (np.random.default_rng(0).standard_normal((500, 6)) * 100).astype(np.int16)
    raw.tofile(tmp_path / "x.dat")
    denoise_recording(tmp_path / "x.dat", tmp_path / "m.pt", tmp_path / "y.dat", channels=6, sample_rate=30000,
                      progress=False)
    assert open_recording(tmp_path / "y.dat", channels=6, sample_rate=30000).shape == (500, 6)
    meta = ("imAiRangeMax=0.6\nimMaxInt=512\nimSampRate=30000\nnSavedChans=6\nsnsApLfSy=5,0,1\n"
            "~imroTbl=(0,5)" + "".join(f"({k} 0 0 500 250 1)" for k in range(5)) + "\n")
    (tmp_path / "a.ap.meta").write_text(meta)
    raw.tofile(tmp_path / "a.ap.bin")
    denoise_recording(tmp_path / "a.ap.bin", tmp_path / "m.pt", tmp_path / "b.ap.bin", progress=False)
    out = open_recording(tmp_path / "b.ap.bin")
    assert out.shape == (500, 6) and out.format == "spikeglx"
    assert np.array_equal(np.asarray(out.data[:, 5]), raw[:, 5])  # the sync channel is copied, not denoised
    assert "fileSizeBytes=6000" in (tmp_path / "b.ap.meta").read_text()


def test_training_denoises_simulated_data(tmp_path):
    """A short training already beats the raw data against the ground truth (thermal noise is removed)."""
    noisy, clean, _ = simulate_ephys_arrays(16, 60000, seed=4, thermal_uv=10.0, background_uv=3.0)
    write_openephys(tmp_path / "rec", noisy, 30000.0, 0.195)
    train_ephys(tmp_path / "rec", "block-ephys", tmp_path / "m.pt", steps=150, crop=256, batch=4, lr=3e-3,
                log=lambda m: None)
    denoise_recording(tmp_path / "rec", tmp_path / "m.pt", tmp_path / "den", progress=False)
    den = open_recording(tmp_path / "den").read()
    assert np.sqrt(((den - clean) ** 2).mean()) < 0.9 * np.sqrt(((noisy - clean) ** 2).mean())


def _hooked(argv):
    from livedenoise.cli import build_parser

    try:
        build_parser().parse_args(argv)
    except SystemExit:
        pytest.skip(f"`livedenoise {' '.join(argv[:2])}` has no ephys hook in this build")


def test_simulate_train_denoise_from_the_command_line(tmp_path, capsys):
    """simulate --ephys -> train --arch block-ephys -> denoise, the way the docs show it."""
    import json

    from livedenoise.cli import main

    _hooked(["simulate", str(tmp_path / "s"), "--ephys"])
    _hooked(["train", "x", "--out", "m.pt", "--arch", "block-ephys", "--stream", "0"])
    _hooked(["denoise", "x", "y", "--model", "m.pt", "--channels", "4"])
    assert main(["simulate", "--ephys", str(tmp_path / "sim"), "--channels", "16", "--duration", "0.3", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["channels"] == 16 and info["spikes"] > 0
    assert main(["train", str(tmp_path / "sim"), "--arch", "block-ephys", "--out", str(tmp_path / "m.pt"), "--steps", "5",
                 "--crop", "128", "--batch", "2", "--json"]) == 0
    card = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["card"]
    assert card["arch"] == "block-ephys" and (card["pre"], card["post"], card["omission"]) == (30, 30, 1)
    # an explicit window is honoured, even one equal to the imaging defaults
    assert main(["train", str(tmp_path / "sim"), "--arch", "block-ephys", "--out", str(tmp_path / "m8.pt"), "--steps", "2",
                 "--crop", "128", "--batch", "2", "--pre", "8", "--post", "1", "--omission", "0", "--json"]) == 0
    card8 = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["card"]
    assert (card8["pre"], card8["post"], card8["omission"]) == (8, 1, 0)
    assert main(["denoise", str(tmp_path / "sim"), str(tmp_path / "den"), "--model", str(tmp_path / "m.pt"), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["samples"] == 9000
    assert open_recording(tmp_path / "den").shape == (9000, 16)
    # a flat .dat needs --channels and --sample-rate (it has no header to say them)
    raw = (np.random.default_rng(0).standard_normal((2000, 16)) * 50).astype(np.int16)
    raw.tofile(tmp_path / "raw.dat")
    assert main(["denoise", str(tmp_path / "raw.dat"), str(tmp_path / "out.dat"), "--model", str(tmp_path / "m.pt"),
                 "--channels", "16", "--sample-rate", "30000", "--json"]) == 0
    assert open_recording(tmp_path / "out.dat", channels=16, sample_rate=30000).shape == (2000, 16)


def test_ephys_train_arch_defaults_and_the_length_rule(tmp_path, capsys):
    """No --arch: the default ephys architecture; a 2p --arch on a recording is refused; a recording
    shorter than one window (registry.min_frames) is refused with check_length's message."""
    from livedenoise.cli import main
    from livedenoise.models import registry

    d = tmp_path / "rec"
    simulate_ephys(d, n_channels=8, duration=0.02, seed=3)  # 600 samples
    out = tmp_path / "m.pt"
    capsys.readouterr()
    assert main(["train", str(d), "--out", str(out), "--steps", "2", "--crop", "64", "--batch", "2", "--quiet"]) == 0
    card, _ = load_model(out)
    # the default (site-ephys) needs the probe geometry, which this recording lacks: the next one, said so
    assert registry.default_name("ephys") == "site-ephys" and card.arch == "block-ephys"
    err = capsys.readouterr().err
    assert "note:" in err and "no probe geometry" in err and "site-ephys" in err and "--probe" in err
    import probeinterface as pi

    from livedenoise.io.probe_geometry import np1_positions

    probe = pi.Probe(ndim=2, si_units="um")
    probe.set_contacts(positions=np1_positions(8), shapes="circle", shape_params={"radius": 5})
    probe.set_device_channel_indices(list(range(8)))
    pi.write_probeinterface(tmp_path / "probe.json", probe)
    assert main(["train", str(d), "--out", str(out), "--steps", "2", "--crop", "64", "--batch", "2", "--quiet",
                 "--probe", str(tmp_path / "probe.json")]) == 0
    assert load_model(out)[0].arch == "site-ephys"
    capsys.readouterr()
    assert main(["train", str(d), "--arch", "cad3d", "--out", str(out), "--steps", "1", "--quiet"]) == 2
    assert "ephys recording" in capsys.readouterr().err
    need = registry.min_frames(registry.make_card("interp-ephys", n_channels=8, pre=400, post=300, omission=0))
    assert need == 701
    assert main(["train", str(d), "--arch", "interp-ephys", "--pre", "400", "--post", "300", "--omission", "0",
                 "--out", str(out), "--steps", "1", "--quiet"]) == 2
    assert f"has 600 samples but this interp-ephys model needs at least {need}" in capsys.readouterr().err
