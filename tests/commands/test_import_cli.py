"""`livedenoise import` as a user runs it (subprocesses): DeepInterpolation and DeepCAD-RT models in, fine-tuned with
`train --init` (DeepInterpolation's 30 + 30 window into a 1-frame-lag one, then served live), exported to the
BioImage Model Zoo and validated with bioimageio.core."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
import torch

from livedenoise.models.checkpoint import load_model, read_checkpoint
from tests.commands.test_train_cli import tiny_movie
from tests.export.foreign.reference_nets import keras_model, keras_predict, save_deepcad_pth
from tests.stream.streamkit import endpoints, read_stream_safe


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "livedenoise", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def one_line_error(r, verb, *words):
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"livedenoise {verb}: error: ")
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("import")
    di = keras_model("unet_single_1024", (None, None, 60), seed=5)
    di.save(str(d / "di.h5"))
    (d / "dc").mkdir()
    save_deepcad_pth(d / "dc" / "E_05_Iter_0200.pth", seed=6,
                     para={"patch_x": 64, "patch_y": 64, "patch_t": 16, "scale_factor": 1, "fmap": 16, "overlap_factor": 0.25})
    noisy, _ = tiny_movie(n=48, h=32, w=32)
    np.save(d / "movie.npy", noisy)
    return {"dir": d, "di": d / "di.h5", "keras": di, "dc": d / "dc" / "E_05_Iter_0200.pth", "movie": d / "movie.npy"}


@pytest.fixture(scope="module")
def di_pt(files):
    out = files["dir"] / "di.pt"
    r = cli("import", files["di"], "--out", out, "--json")
    assert r.returncode == 0, r.stderr
    return out, json.loads(r.stdout)


def test_import_deepinterpolation_keeps_its_window_and_says_where_it_came_from(files, di_pt):
    out, report = di_pt
    card = report["card"]
    assert card["arch"] == "interp2d" and card["params"]["preset"] == "di"
    assert (card["pre"], card["post"], card["omission"]) == (30, 30, 0)
    assert card["origin"]["tool"] == "DeepInterpolation" and card["origin"]["file"] == "di.h5"
    assert any("published 30 before + 30 after" in n for n in report["notes"])
    _, net = load_model(out)
    x = np.random.default_rng(0).standard_normal((1, 32, 48, 60)).astype(np.float32)
    with torch.no_grad():
        got = net(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
    want = keras_predict(files["keras"], x)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_import_prints_the_card_and_notes(files, tmp_path):
    r = cli("import", files["dc"], "--out", tmp_path / "dc.pt")
    assert r.returncode == 0, r.stderr
    assert "imported DeepCAD-RT" in r.stdout and "cad3d(rt)" in r.stdout and "note: normalisation" in r.stdout


def test_import_errors_are_one_line(files, tmp_path):
    (tmp_path / "junk.h5").write_bytes(b"junk" * 10)
    one_line_error(cli("import", tmp_path / "junk.h5", "--out", tmp_path / "m.pt"), "import", "neither a Keras")
    one_line_error(cli("import", files["di"], "--out", tmp_path / "m.pt", "--pre", 10, "--post", 10), "import",
                   "reads 60 input frames")
    one_line_error(cli("import", files["di"], "--out", tmp_path / "m.onnx"), "import", "must end in .pt")
    one_line_error(cli("import", tmp_path / "none.pth", "--out", tmp_path / "m.pt"), "import", "does not exist")
    one_line_error(cli("import", files["dc"], "--out", tmp_path / "m.pt", "--channels", 384), "import", "--channels")
    one_line_error(cli("import", files["di"], "--out", tmp_path / "m.pt", "--deepcad-yaml", tmp_path / "p.yaml"), "import",
                   "--deepcad-yaml")
    assert not (tmp_path / "m.pt").exists()


def test_deepinterpolation_fine_tuned_to_one_frame_of_lag_runs_live(files, di_pt, tmp_path):
    """import -> train --init --post 1 (the 30 future frames folded onto t+1) -> serve, frames in = frames out."""
    short = tmp_path / "short.pt"
    r = cli("train", files["movie"], "--init", di_pt[0], "--post", 1, "--out", short, "--steps", 2, "--crop", 32,
            "--batch", 1, "--val-every", 1, "--no-tune-innovation", "--quiet", "--json")
    assert r.returncode == 0, r.stderr
    card, _ = read_checkpoint(short)
    assert card.arch == "interp2d" and (card.pre, card.post, card.lag) == (30, 1, 1)
    assert card.origin["tool"] == "DeepInterpolation"  # still traceable after fine-tuning
    assert "folded" in card.training["init"] and "+2..+30" in card.training["init"]
    i, o = endpoints()
    serve = subprocess.Popen([sys.executable, "-m", "livedenoise", "serve", "--model", str(short), "--input", i,
                              "--output", o, "--record", str(tmp_path / "rec"), "--json", "--quiet"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        rr = cli("replay", files["movie"], "--endpoint", i, "--fps", 50, "--wait", 60, "--json")
        assert rr.returncode == 0, rr.stderr
        deadline = time.monotonic() + 120  # every frame received (recorded raw) before the Ctrl-C
        while time.monotonic() < deadline and len(read_stream_safe(tmp_path / "rec")) < 48:
            time.sleep(0.2)
    finally:
        serve.send_signal(signal.SIGINT)
        out, err = serve.communicate(timeout=180)
    assert serve.returncode == 0, err
    final = json.loads(out.strip().splitlines()[-1])
    assert final["frames_in"] == 48 and final["frames_out"] == 48


def test_deepcad_round_trip_to_the_bioimage_model_zoo(files, tmp_path):
    """import -> train --init -> export --bioimageio -> bioimageio.core runs the package and reproduces its test output."""
    from bioimageio.core import test_model

    imported, tuned, pkg = tmp_path / "dc.pt", tmp_path / "tuned.pt", tmp_path / "dc.zip"
    assert cli("import", files["dc"], "--out", imported).returncode == 0
    r = cli("train", files["movie"], "--init", imported, "--out", tuned, "--steps", 2, "--crop", 16, "--batch", 1,
            "--val-every", 1, "--no-tune-innovation", "--quiet")
    assert r.returncode == 0, r.stderr
    card, _ = read_checkpoint(tuned)
    assert card.arch == "cad3d" and card.origin["tool"] == "DeepCAD-RT" and card.training["steps"] == 2
    one_line_error(cli("export", tuned, "--bioimageio", pkg, "--frame-shape", 32, 32), "export", "--license")
    r = cli("export", tuned, "--bioimageio", pkg, "--frame-shape", 32, 32, "--license", "GPL-2.0-only",
            "--author", "Test Lab")
    assert r.returncode == 0, r.stderr
    assert "validated with bioimageio.spec" in r.stdout
    with zipfile.ZipFile(pkg) as z:
        names = set(z.namelist())
        import yaml

        rdf = yaml.safe_load(z.read("rdf.yaml"))
    assert {"rdf.yaml", "weights.onnx", "weights.torchscript.pt", "test_input.npy", "test_output.npy", "cover.png",
            "README.md"} <= names
    assert rdf["config"]["livedenoise"]["card"]["origin"]["tool"] == "DeepCAD-RT"
    assert rdf["inputs"][0]["axes"][1]["channel_names"] == [f"t{o:+d}" for o in card.offsets]
    (norm,) = [s for s in rdf["inputs"][0]["preprocessing"] if s["id"] == "fixed_zero_mean_unit_variance"]
    assert norm["kwargs"] == pytest.approx({"mean": card.norm_mean, "std": card.norm_std})  # the card's statistics
    summary = test_model(pkg)
    assert summary.status == "passed", summary.format()
    ran = {d.name for d in summary.details}
    assert any("onnx" in n.lower() for n in ran) and any("torchscript" in n.lower() for n in ran), ran


def test_bioimageio_export_refusals(files, di_pt, tmp_path):
    one_line_error(cli("export", di_pt[0], "--bioimageio", tmp_path / "p.zip", "--frame-shape", 32, 32, "--license", "MIT"),
                   "export", "--check MOVIE")
    one_line_error(cli("export", di_pt[0], "--bioimageio", tmp_path / "p.tar"), "export", ".zip")
    assert not list(tmp_path.iterdir())


def test_neuropixels_model_import_fine_tune_and_denoise(tmp_path):
    """DeepInterpolation's Neuropixels net (built for 16 sites) -> import -> train --init --post 2 -> denoise a .dat."""
    keras_model("unet_single_ephys_1024", (16, 2, 60), seed=8).save(str(tmp_path / "np.h5"))
    one_line_error(cli("import", tmp_path / "np.h5", "--out", tmp_path / "np.pt"), "import", "--norm-mean and --norm-std")
    r = cli("import", tmp_path / "np.h5", "--out", tmp_path / "np.pt", "--norm-mean", 0, "--norm-std", 30)
    assert r.returncode == 0, r.stderr
    assert "interp-ephys-di(di) ephys pre=30 post=30 omission=1 lag=31" in r.stdout
    (np.random.default_rng(0).standard_normal((500, 16)) * 30).astype(np.int16).tofile(tmp_path / "rec.dat")
    rate = ["--channels", 16, "--sample-rate", 30000]
    r = cli("train", tmp_path / "rec.dat", *rate, "--init", tmp_path / "np.pt", "--post", 2, "--steps", 1, "--batch", 2,
            "--out", tmp_path / "tuned.pt", "--quiet")
    assert r.returncode == 0, r.stderr
    card, _ = read_checkpoint(tmp_path / "tuned.pt")
    assert card.arch == "interp-ephys-di" and card.lag == 3 and card.origin["network"] == "unet_single_ephys_1024"
    r = cli("denoise", tmp_path / "rec.dat", tmp_path / "out.dat", "--model", tmp_path / "tuned.pt", *rate)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out.dat").stat().st_size == (tmp_path / "rec.dat").stat().st_size
