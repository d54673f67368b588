"""Every writer follows one rule (livedenoise/io/atomic.py): a partial name while writing, the final name only
when complete, what was written kept (and readable) under the partial name after an interruption or a crash.

Real files and real processes: the crash test SIGKILLs a child that is writing and reads what it left.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from livedenoise.errors import UserError
from livedenoise.io.atomic import Outputs, partial_path
from livedenoise.io.readers_ephys import open_recording
from livedenoise.io.writers_ephys import BinaryWriter, DatWriter, NpyAppender, SpikeGLXWriter, writer_like

BV = np.array([0.5, 0.5, 0.25, 1.0])
META = {"typeThis": "imec", "imAiRangeMax": "0.6", "imMaxInt": "512", "imSampRate": "30000", "nSavedChans": "4",
        "snsApLfSy": "3,0,1", "imroTbl": "(0,3)(0 0 0 500 250 1)(1 0 0 500 250 1)(2 0 0 500 250 1)",
        "fileSHA1": "ABC"}


def block(k, n=1000):
    """(n, 4) µV exactly representable with BV, different in every block."""
    raw = (np.arange(n * 4).reshape(n, 4) + 7 * k) % 2000 - 1000
    return raw * BV


def stored(uv):
    """What a writer stores for `uv` (int16 units of BV)."""
    return np.rint(uv / BV).astype(np.int16)


def test_partial_names():
    assert partial_path("a/out.tif").as_posix() == "a/out.partial.tif"
    assert partial_path("run_g0_t0.imec0.lf.bin").name == "run_g0_t0.imec0.lf.partial.bin"
    assert partial_path("den", folder=True).name == "den.partial"


def make(kind, tmp_path):
    if kind == "openephys":
        return BinaryWriter(tmp_path / "den", 30000.0, BV, first_sample=100)
    if kind == "spikeglx":
        return SpikeGLXWriter(tmp_path / "den.imec0.ap.bin", BV, META, 30000.0)
    return DatWriter(tmp_path / "den.dat", BV)


def final_names(kind, tmp_path):
    return {"openephys": [tmp_path / "den"], "spikeglx": [tmp_path / "den.imec0.ap.bin", tmp_path / "den.imec0.ap.meta"],
            "dat": [tmp_path / "den.dat"]}[kind]


def read_back(kind, path):
    if kind == "dat":
        return open_recording(path, channels=4, sample_rate=30000.0, bit_volts=0.25)
    return open_recording(path)


@pytest.mark.parametrize("kind", ["openephys", "spikeglx", "dat"])
def test_final_name_only_when_complete(kind, tmp_path):
    w = make(kind, tmp_path)
    for k in range(3):
        w.write(block(k))
        assert not any(p.exists() for p in final_names(kind, tmp_path))
    w.close()
    assert all(p.exists() for p in final_names(kind, tmp_path))
    assert not list(tmp_path.glob("*partial*"))
    rec = read_back(kind, final_names(kind, tmp_path)[0])
    assert rec.n_samples == 3000 and not rec.meta.get("partial")
    np.testing.assert_array_equal(rec.read_raw(), stored(np.concatenate([block(k) for k in range(3)])))
    if kind == "openephys":
        assert rec.sample_numbers[0] == 100 and rec.sample_numbers[-1] == 3099
        assert "livedenoise partial" not in json.loads((rec.path / "structure.oebin").read_text())
    if kind == "spikeglx":
        text = (tmp_path / "den.imec0.ap.meta").read_text()
        assert "fileSizeBytes=24000" in text and "livedenoisePartial" not in text
        # the source's checksum (ABC) is replaced by the new file's, as SpikeGLX writes it
        sha1 = hashlib.sha1((tmp_path / "den.imec0.ap.bin").read_bytes()).hexdigest().upper()
        assert f"fileSHA1={sha1}\n" in text and "ABC" not in text


@pytest.mark.parametrize("kind", ["openephys", "spikeglx", "dat"])
def test_interruption_keeps_what_was_written_under_the_partial_name(kind, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with make(kind, tmp_path) as w:
            w.write(block(0))
            w.write(block(1))
            raise KeyboardInterrupt
    assert not any(p.exists() for p in final_names(kind, tmp_path))
    assert w.partial.exists()
    rec = read_back(kind, w.partial)
    assert rec.n_samples == 2000
    np.testing.assert_array_equal(rec.read_raw(), stored(np.concatenate([block(0), block(1)])))
    # nothing written: nothing kept
    with pytest.raises(ValueError):
        with make(kind, tmp_path / "empty") if kind == "openephys" else make(kind, _mk(tmp_path / "empty")):
            raise ValueError("before any sample")
    assert not list((tmp_path / "empty").glob("*"))


def _mk(p):
    p.mkdir()
    return p


def test_outputs_block_defers_the_rename_until_the_task_completes(tmp_path):
    """A writer closed by a `finally` inside a task that then fails must not appear under its final name."""
    outs = Outputs()
    with pytest.raises(RuntimeError):
        with outs:
            w = SpikeGLXWriter(tmp_path / "a.bin", BV, META, 30000.0)
            try:
                w.write(block(0))
            finally:
                w.close()  # what a driver's `finally` does
            assert not (tmp_path / "a.bin").exists()  # closed, but the task is not over
            raise RuntimeError("later step failed")
    assert not (tmp_path / "a.bin").exists() and not (tmp_path / "a.meta").exists()
    assert [o.partial.name for o in outs.kept] == ["a.partial.bin"]
    assert "1000 samples" in outs.kept[0].describe() and "a.partial.meta" in outs.kept[0].describe()
    with Outputs():
        w = SpikeGLXWriter(tmp_path / "a.bin", BV, META, 30000.0)
        w.write(block(0))
        w.close()
        assert not (tmp_path / "a.bin").exists()
    assert open_recording(tmp_path / "a.bin").n_samples == 1000 and not (tmp_path / "a.partial.bin").exists()


def test_a_session_with_a_recording_gets_the_next_one(tmp_path):
    for k in range(2):
        w = BinaryWriter(tmp_path / "rec", 30000.0, BV)
        w.write(block(k))
        w.close()
    node = tmp_path / "rec" / "Record Node 101" / "experiment1"
    assert sorted(p.name for p in node.iterdir()) == ["recording1", "recording2"]
    np.testing.assert_array_equal(open_recording(node / "recording1").read(), block(0))
    np.testing.assert_array_equal(open_recording(node / "recording2").read(), block(1))


def test_writer_like_refuses_to_write_over_its_input(tmp_path):
    w = SpikeGLXWriter(tmp_path / "in.imec0.ap.bin", BV, META, 30000.0)
    w.write(block(0))
    w.close()
    rec = open_recording(tmp_path / "in.imec0.ap.bin")
    before = (tmp_path / "in.imec0.ap.bin").read_bytes()
    with pytest.raises(UserError, match="is the input"):
        writer_like(rec, tmp_path / "in.imec0.ap.bin")
    with pytest.raises(UserError, match=r"\.bin"):
        writer_like(rec, tmp_path / "out.dat")
    assert (tmp_path / "in.imec0.ap.bin").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.imec0.ap.bin", "in.imec0.ap.meta"]


def test_npy_header_is_valid_at_every_flush(tmp_path):
    a = NpyAppender(tmp_path / "x.npy", "<i8")
    assert np.load(tmp_path / "x.npy").shape == (0,)  # valid from the start
    a.append(np.arange(5))
    a.flush()
    a.append(np.arange(5, 9))  # not flushed: not counted
    a.f.flush()  # even when the bytes reached the file
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), np.arange(5))
    with open(tmp_path / "x.npy", "rb") as f:
        assert np.lib.format.read_magic(f) == (1, 0)
        np.lib.format.read_array_header_1_0(f)
        assert f.tell() == NpyAppender.HEADER
    a.close()
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), np.arange(9))


CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    from livedenoise.io.writers_ephys import BinaryWriter, SpikeGLXWriter
    sys.path.insert(0, sys.argv[3])
    from test_writers_atomic import BV, META, block
    kind, out = sys.argv[1], sys.argv[2]
    auto = len(sys.argv) > 4  # flush_every_s=0: the writer flushes at every write by itself
    kw = dict(flush_every_s=0.0 if auto else None)
    if kind == "openephys":
        w = BinaryWriter(out, 30000.0, BV, first_sample=100, **kw)
    else:
        w = SpikeGLXWriter(out, BV, META, 30000.0, **kw)
    for k in range(3):
        w.write(block(k))
    if not auto:
        w.flush()
        w.write(block(3, 2999))  # after the last flush: larger than the write buffers, so in the files, never counted
    print("flushed", flush=True)
    sys.stdin.read()  # wait to be killed
""")


@pytest.mark.parametrize("auto", [False, True], ids=["explicit-flush", "flush-every-write"])
@pytest.mark.parametrize("kind", ["openephys", "spikeglx"])
def test_sigkill_leaves_files_readable_up_to_the_last_flush(kind, auto, tmp_path):
    out = tmp_path / ("rec" if kind == "openephys" else "rec.imec0.ap.bin")
    args = [sys.executable, "-c", CHILD, kind, str(out), os.path.dirname(__file__)] + (["auto"] if auto else [])
    p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()  # the child has flushed
        assert line.strip() == "flushed", p.stderr.read()
        p.send_signal(signal.SIGKILL)
        assert p.wait(timeout=60) == -signal.SIGKILL
    finally:
        if p.poll() is None:
            p.kill()
        p.stdin.close()
        p.stdout.close()
        p.stderr.close()
    expected = np.concatenate([block(k) for k in range(3)])
    assert not out.exists()  # never complete: nothing under the final name
    data = next(tmp_path.rglob("continuous.dat" if kind == "openephys" else "*.partial.bin"))
    if not auto:  # bytes written after the last flush are in the file: the readers stop at the flush
        assert data.stat().st_size > 3000 * 4 * 2
    if kind == "openephys":
        cont = next((tmp_path / "rec.partial").rglob("continuous.dat")).parent
        sn = np.load(cont / "sample_numbers.npy")
        ts = np.load(cont / "timestamps.npy")
        np.testing.assert_array_equal(sn, np.arange(100, 3100))
        np.testing.assert_allclose(ts, sn / 30000.0)
        rec = open_recording(tmp_path / "rec.partial")
        assert rec.meta["partial"] and "partial" in rec.describe()
        np.testing.assert_array_equal(rec.sample_numbers, sn)
    else:
        rec = open_recording(tmp_path / "rec.imec0.ap.partial.bin")
        assert rec.meta["partial"]
    assert rec.n_samples == 3000
    np.testing.assert_array_equal(rec.read_raw(), stored(expected))


@pytest.mark.parametrize("kind", ["openephys", "spikeglx"])
def test_a_block_cut_by_ctrl_c_is_dropped_whole(kind, tmp_path):
    """Ctrl-C can land inside a write (bytes in the file, not counted) or between the .dat and its sample
    numbers: on abort the writer counts what the files hold, in whole samples, and cuts the rest."""
    w = make(kind, tmp_path)
    w.write(block(0))
    data = w.dat if kind == "openephys" else w.f
    data.write(np.zeros((5, 4), "<i2").tobytes() + b"\x01\x02\x03")  # 5 samples and a half: what a cut write leaves
    w.abort()
    rec = read_back(kind, w.partial)
    assert rec.n_samples == (1000 if kind == "openephys" else 1005)  # Open Ephys: no sample numbers for the 5
    np.testing.assert_array_equal(rec.read_raw()[:1000], stored(block(0)))
    if kind == "spikeglx":
        assert f"fileSizeBytes={1005 * 8}" in w.partial.with_suffix(".meta").read_text()
