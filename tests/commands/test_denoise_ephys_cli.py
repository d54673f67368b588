"""`livedenoise denoise` on extracellular recordings, as a user runs it: a real subprocess on real files.

- a SpikeGLX LF-band file that saves a channel subset is denoised with its LF channels scaled by the LF gain
  and its sync channel copied;
- a malformed .meta or a bad output name is one line, exit 2, and no output file at all;
- Ctrl-C once output has started leaves nothing under the final name; what was written is kept, readable,
  under the partial name the message gives. The test waits for conditions (files growing, the process
  ending), never for a time;
- ambiguous input is refused in one line that names the choices and the flag, never guessed: two streams that
  may be neural, a session with two recordings, a flat .dat without its sample rate, a model trained at
  another sample rate; an NI-DAQ stream listed first is not taken for the probe;
- the Open Ephys output is a complete copy (events, sync messages, settings, other streams, sample numbers),
  readable by open-ephys-python-tools.
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from livedenoise.io.readers_ephys import open_recording
from livedenoise.io.writers_ephys import write_openephys
from tests.io.oe_layouts import NIDAQ, PROBE_AP, PROBE_LFP, gui06_recording, tree

LF_IMRO = "(0,384)" + "".join(f"({c} 0 0 500 {250 if c % 2 else 125} 1)" for c in range(384))


def cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "livedenoise", *map(str, args)], capture_output=True, text=True,
                          timeout=600, **kw)


def one_line_error(r, *words):
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("livedenoise denoise: error: ")
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from livedenoise.models.checkpoint import save_checkpoint
    from livedenoise.models.nets import block_ephys
    from livedenoise.models.registry import build_network

    d = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    card = block_ephys.make_card(4, 5, 2, 1, "fast", norm_std=20.0)
    save_checkpoint(d / "m.pt", card, build_network(card).state_dict())
    return d / "m.pt"


def write_glx(path, data, **meta):
    data = np.ascontiguousarray(data, "<i2")
    data.tofile(path)
    meta = {"nSavedChans": data.shape[1], "fileSizeBytes": data.nbytes, **meta}
    lines = [f"{'~' if k in ('imroTbl', 'snsChanMap') else ''}{k}={v}" for k, v in meta.items()]
    path.with_suffix(".meta").write_text("\n".join(lines) + "\n")


def lf_subset_file(tmp_path, samples=3000):
    """An NP1.0 LF-band file saving 16 LF channels (acquisition 384:399) and the sync channel (768)."""
    rng = np.random.default_rng(3)
    neural = rng.normal(0, 30, size=(samples, 16))
    sync = (np.arange(samples) // 250 % 2) * 64
    data = np.rint(np.c_[neural, sync]).astype("<i2")
    path = tmp_path / "lfp_g0_t0.imec0.lf.bin"
    write_glx(path, data, typeThis="imec", imAiRangeMax=0.6, imAiRangeMin=-0.6, imMaxInt=512, imDatPrb_type=0,
              imSampRate=2500, acqApLfSy="384,384,1", snsApLfSy="0,384,1", snsSaveChanSubset="384:399,768",
              imroTbl=LF_IMRO, firstSample=77)
    return path, data


def test_lf_band_channel_subset_is_denoised_with_the_lf_gains(model, tmp_path):
    src, data = lf_subset_file(tmp_path)
    before = src.read_bytes(), src.with_suffix(".meta").read_bytes()
    out = tmp_path / "den_g0_t0.imec0.lf.bin"
    r = cli("denoise", src, out, "--model", model, "-q")
    assert r.returncode == 0, r.stderr
    assert (src.read_bytes(), src.with_suffix(".meta").read_bytes()) == before  # raw data never modified
    rec = open_recording(out)
    assert rec.channel_names == [f"LF{k}" for k in range(16)] + ["SY0"]
    lf = np.array([0.6 / 512 / (250 if c % 2 else 125) * 1e6 for c in range(16)])
    np.testing.assert_allclose(rec.bit_volts, list(lf) + [1.0])
    y = rec.read_raw()
    assert y.shape == data.shape and rec.sample_numbers[0] == 77
    np.testing.assert_array_equal(y[:, 16], data[:, 16])  # the sync channel is copied
    assert np.abs(y[:, :16].astype(float) - data[:, :16]).mean() > 1  # the LF channels went through the model
    assert f"fileSizeBytes={y.nbytes}" in out.with_suffix(".meta").read_text()
    assert not list(tmp_path.glob("*partial*"))


BAD_META = {
    "subset vs nSavedChans": ("snsSaveChanSubset=384:399,768", "snsSaveChanSubset=384:389,768", "lists 7 channels"),
    "subset garbage": ("snsSaveChanSubset=384:399,768", "snsSaveChanSubset=LF0..LF15", "snsSaveChanSubset"),
    "range": ("imAiRangeMax=0.6", "imAiRangeMax=inf", "imAiRangeMax"),
    "channels": ("nSavedChans=17", "nSavedChans=seventeen", "nSavedChans"),
    "rate": ("imSampRate=2500", "imSampRate=0", "imSampRate"),
    "imro": ("~imroTbl=(0,384)", "~imroTbl=(0,384)(x", "imroTbl"),
}


@pytest.mark.parametrize("case", BAD_META)
def test_malformed_meta_is_one_line_and_no_output(case, model, tmp_path):
    src, _ = lf_subset_file(tmp_path, samples=200)
    old, new, words = BAD_META[case]
    meta = src.with_suffix(".meta")
    text = meta.read_text()
    assert old in text
    meta.write_text(text.replace(old, new, 1))
    r = cli("denoise", src, tmp_path / "out.lf.bin", "--model", model)
    one_line_error(r, words, str(meta.name))
    assert "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [src.name, meta.name]  # no output, no 0-byte .bin


def test_output_name_is_checked_before_anything_is_written(model, tmp_path):
    src, _ = lf_subset_file(tmp_path, samples=200)
    before = src.read_bytes()
    one_line_error(cli("denoise", src, src, "--model", model), "is the input")
    one_line_error(cli("denoise", src, tmp_path / "out.dat", "--model", model), ".bin")
    (tmp_path / "somedir.bin").mkdir()
    one_line_error(cli("denoise", src, tmp_path / "somedir.bin", "--model", model), "folder")
    assert src.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([src.name, src.with_suffix(".meta").name, "somedir.bin"])


def wait_for(cond, proc, what, limit=300.0):
    """Poll `cond` until it holds; fails if the process ends first (or after a generous limit)."""
    t0 = time.monotonic()
    while not cond():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"denoise ended (exit {proc.returncode}) before {what}: {err[-2000:]}")
        if time.monotonic() - t0 > limit:
            proc.kill()
            pytest.fail(f"no {what} after {limit} s")
        time.sleep(0.005)


def interrupt_once_output_started(args, grown):
    proc = subprocess.Popen([sys.executable, "-m", "livedenoise", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(grown, proc, "output was written")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out, err


def size(p):
    try:
        return os.path.getsize(p)
    except OSError:
        return 0


def test_ctrl_c_spikeglx_leaves_no_final_file_and_a_readable_partial(model, tmp_path):
    n = 40 * 30000  # 40 s: the first of its 40 written chunks is the signal to interrupt
    raw = (np.random.default_rng(1).standard_normal((n, 5)) * 20).astype("<i2")
    src = tmp_path / "long_g0_t0.imec0.ap.bin"
    imro = "(0,4)" + "".join(f"({c} 0 0 500 250 1)" for c in range(4))
    write_glx(src, raw, typeThis="imec", imAiRangeMax=0.6, imMaxInt=512, imSampRate=30000, snsApLfSy="4,0,1",
              acqApLfSy="4,4,1", snsSaveChanSubset="0:3,8", imroTbl=imro)
    out = tmp_path / "den.bin"
    partial = tmp_path / "den.partial.bin"
    code, stdout, stderr = interrupt_once_output_started(["denoise", src, out, "--model", model, "-q"],
                                                         lambda: size(partial) > 0)
    assert code == 130, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "interrupted" in lines[0] and str(partial) in lines[0], stderr
    assert not out.exists() and not out.with_suffix(".meta").exists()  # nothing under the final name
    rec = open_recording(partial)  # what was written reads back, consistent with its .meta
    assert 0 < rec.n_samples < n
    assert f"fileSizeBytes={size(partial)}" in partial.with_suffix(".meta").read_text()
    assert f"{rec.n_samples} samples" in lines[0]
    np.testing.assert_array_equal(rec.read_raw()[:, 4], raw[:rec.n_samples, 4])  # sync copied up to there


def test_ctrl_c_open_ephys_leaves_no_final_folder_and_a_readable_partial(model, tmp_path):
    n = 40 * 30000
    uv = (np.random.default_rng(2).standard_normal((n, 4)) * 20).astype(np.float32)
    write_openephys(tmp_path / "rec", uv, 30000.0, 0.195, sample_numbers=np.arange(n, dtype=np.int64) + 500)
    out = tmp_path / "den"
    partial = tmp_path / "den.partial"
    ts = lambda: next(partial.rglob("timestamps.npy"), None)  # noqa: E731
    # a block is written as continuous.dat, then sample_numbers.npy, then timestamps.npy: data in the last one
    # (past its 128-byte header) means a whole block, sample numbers included, has been written
    code, stdout, stderr = interrupt_once_output_started(["denoise", tmp_path / "rec", out, "--model", model, "-q"],
                                                         lambda: ts() is not None and size(ts()) > 128)
    assert code == 130, stderr
    assert len(stderr.strip().splitlines()) == 1 and str(partial) in stderr, stderr
    assert not out.exists()
    rec = open_recording(partial)
    assert 0 < rec.n_samples < n
    np.testing.assert_array_equal(rec.sample_numbers, np.arange(rec.n_samples) + 500)
    np.testing.assert_array_equal(np.load(next(partial.rglob("sample_numbers.npy"))), rec.sample_numbers)


# ----------------------------------------------------------------------------- ambiguous input is refused


@pytest.fixture(scope="module")
def model_30k(tmp_path_factory):
    """An 8-channel-agnostic block model whose card says it was trained at 30 kHz."""
    from livedenoise.models.checkpoint import save_checkpoint
    from livedenoise.models.nets import block_ephys
    from livedenoise.models.registry import build_network

    d = tmp_path_factory.mktemp("model30k")
    torch.manual_seed(1)
    card = block_ephys.make_card(4, 5, 2, 1, "fast", norm_std=60.0, training={"sample_rate": 30000.0})
    save_checkpoint(d / "m.pt", card, build_network(card).state_dict())
    return d / "m.pt"


def test_ni_daq_stream_listed_first_is_not_denoised_and_the_copy_is_complete(model_30k, tmp_path):
    from open_ephys.analysis import Session

    src_rec = gui06_recording(tmp_path / "in", streams=(NIDAQ, PROBE_AP))
    before = tree(tmp_path / "in")
    r = cli("denoise", tmp_path / "in", tmp_path / "out", "--model", model_30k, "-q")
    assert r.returncode == 0, r.stderr
    assert "stream 'ProbeA-AP' read: the only one" in r.stdout and "PXIe-6341" in r.stdout  # said, not silent
    assert tree(tmp_path / "in") == before
    out_rec = tmp_path / "out" / src_rec.relative_to(tmp_path / "in")
    src, out = tree(src_rec), tree(out_rec)
    assert sorted(out) == sorted(src)
    changed = sorted(k for k in src if out[k] != src[k])
    assert changed == ["continuous/Neuropix-PXI-100.ProbeA-AP/continuous.dat", "structure.oebin"]
    a = Session(str(tmp_path / "in")).recordnodes[0].recordings[0]
    b = Session(str(tmp_path / "out")).recordnodes[0].recordings[0]
    assert a.events.equals(b.events) and a.messages.equals(b.messages)
    np.testing.assert_array_equal(b.continuous[0].samples, a.continuous[0].samples)  # the NI-DAQ TTL untouched
    np.testing.assert_array_equal(b.continuous[1].sample_numbers, a.continuous[1].sample_numbers)
    assert np.abs(b.continuous[1].samples.astype(float) - a.continuous[1].samples).mean() > 1  # the probe denoised


def test_two_neural_streams_are_refused_and_stream_picks_one(model_30k, tmp_path):
    gui06_recording(tmp_path / "in", streams=(PROBE_AP, {**PROBE_LFP, "rate": 30000.0}))
    r = cli("denoise", tmp_path / "in", tmp_path / "out", "--model", model_30k)
    one_line_error(r, "0 'ProbeA-AP'", "1 'ProbeA-LFP'", "8 ch at 30000 Hz", "--stream")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("out.partial*"))
    r = cli("denoise", tmp_path / "in", tmp_path / "out", "--model", model_30k, "--stream", "ProbeA-LFP", "-q")
    assert r.returncode == 0, r.stderr
    assert open_recording(tmp_path / "out", stream=1).read_raw().tolist() != \
        open_recording(tmp_path / "in", stream=1).read_raw().tolist()
    assert open_recording(tmp_path / "out", stream=0).read_raw().tolist() == \
        open_recording(tmp_path / "in", stream=0).read_raw().tolist()


def test_a_session_with_two_recordings_is_refused_and_recording_picks_one(model_30k, tmp_path):
    for k in (1, 2):
        gui06_recording(tmp_path / "in", streams=(PROBE_AP,), recording=k, first=1000 * k)
    r = cli("denoise", tmp_path / "in", tmp_path / "out", "--model", model_30k)
    one_line_error(r, "2 recordings", "experiment1/recording1", "experiment1/recording2", "--recording")
    assert not (tmp_path / "out").exists()
    r = cli("train", tmp_path / "in", "--out", tmp_path / "m.pt", "--steps", "1")
    assert r.returncode == 2 and "--recording" in r.stderr and not (tmp_path / "m.pt").exists()
    for k in (2, 1):  # each in turn, into one output: names and numbers kept
        r = cli("denoise", tmp_path / "in", tmp_path / "out", "--model", model_30k, "--recording", k, "-q")
        assert r.returncode == 0, r.stderr
        assert f"recording{k}" in r.stdout
    for k in (1, 2):
        den = open_recording(tmp_path / "out", recording=k)
        assert den.path.name == f"recording{k}" and den.sample_numbers[0] == 1000 * k


def test_flat_dat_without_sample_rate_is_refused(model_30k, tmp_path):
    raw = (np.random.default_rng(4).standard_normal((3000, 4)) * 40).astype("<i2")
    raw.tofile(tmp_path / "raw.dat")
    r = cli("denoise", tmp_path / "raw.dat", tmp_path / "den.dat", "--model", model_30k, "--channels", 4)
    one_line_error(r, "raw.dat", "--sample-rate HZ")
    assert not (tmp_path / "den.dat").exists()
    r = cli("train", tmp_path / "raw.dat", "--out", tmp_path / "m.pt", "--channels", 4, "--steps", "1")
    assert r.returncode == 2 and "--sample-rate" in r.stderr and not (tmp_path / "m.pt").exists()
    r = cli("denoise", tmp_path / "raw.dat", tmp_path / "den.dat", "--model", model_30k, "--channels", 4,
            "--sample-rate", 30000, "-q")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "den.dat").stat().st_size == raw.nbytes


def test_a_model_trained_at_another_sample_rate_is_refused_unless_forced(model_30k, tmp_path):
    raw = (np.random.default_rng(5).standard_normal((3000, 4)) * 40).astype("<i2")
    raw.tofile(tmp_path / "raw.dat")
    args = ["denoise", tmp_path / "raw.dat", tmp_path / "den.dat", "--model", model_30k, "--channels", 4,
            "--sample-rate", 15000]
    one_line_error(cli(*args), "trained at 30000 Hz", "the data are at 15000 Hz", "--force-rate")
    assert not (tmp_path / "den.dat").exists()
    r = cli(*args, "--force-rate", "-q")
    assert r.returncode == 0, r.stderr
    assert "warning:" in r.stdout and "trained at 30000 Hz" in r.stdout and (tmp_path / "den.dat").exists()
    # within 1 %: SpikeGLX's calibrated rates (30000.07 Hz) are the same rate
    r = cli("denoise", tmp_path / "raw.dat", tmp_path / "den2.dat", "--model", model_30k, "--channels", 4,
            "--sample-rate", 30000.07, "-q")
    assert r.returncode == 0 and "warning" not in r.stdout, r.stderr


def test_a_sync_only_spikeglx_file_is_refused(tmp_path):
    import subprocess
    import sys

    from livedenoise.io.writers_ephys import SpikeGLXWriter  # noqa: F401  (the format's own writer exists)

    bin_path = tmp_path / "run_g0_t0.nidq.bin"
    np.zeros((3000, 1), "<i2").tofile(bin_path)
    bin_path.with_suffix(".meta").write_text(
        "typeThis=nidq\nnSavedChans=1\nniSampRate=30000\nsnsMnMaXaDw=0,0,0,1\nsnsSaveChanSubset=all\n"
        "niAiRangeMax=5\nniAiRangeMin=-5\nniMNGain=200\nniMAGain=1\nfileSizeBytes=6000\n")
    r = subprocess.run([sys.executable, "-m", "livedenoise", "denoise", str(bin_path), str(tmp_path / "out.bin"),
                        "--model", "nonexistent.pt"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "nothing to denoise" in r.stderr, r.stderr
    assert not list(tmp_path.glob("out*"))
