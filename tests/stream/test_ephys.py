"""SamplePipeline: segmenting at gaps and restarts, streaming in any pieces equals offline, files with gaps.

Real tiny models saved as checkpoints and opened through `open_engine`, real
Open Ephys Binary files; nothing we ship is mocked.
"""

import numpy as np
import pytest
import torch

from livedenoise.export.engines import open_engine
from livedenoise.io.readers_ephys import open_recording
from livedenoise.io.writers_ephys import write_openephys
from livedenoise.models.checkpoint import save_checkpoint
from livedenoise.models.nets import block_ephys, interp_ephys
from livedenoise.models.registry import build_network
from livedenoise.stream import gaps
from livedenoise.stream.ephys import SamplePipeline, denoise_recording
from livedenoise.stream.offline import denoise_array

C = 6
ARCHS = ["block-ephys", "interp-ephys"]


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    d = tmp_path_factory.mktemp("ephys_models")
    cards = {
        "block-ephys": block_ephys.make_card(C, 30, 30, 1, "fast", norm_mean=0.0, norm_std=10.0),
        "interp-ephys": interp_ephys.make_card(C, 4, 2, 1, "lite", norm_mean=0.0, norm_std=10.0),
    }
    out = {}
    for arch, card in cards.items():
        torch.manual_seed(0)
        net = build_network(card)
        with torch.no_grad():
            for p in net.parameters():
                p.mul_(0.5)
        save_checkpoint(d / f"{arch}.pt", card, net.state_dict())
        out[arch] = (d / f"{arch}.pt", open_engine(d / f"{arch}.pt", "torch"))
    return out


def data(n, seed=0):
    return (np.random.default_rng(seed).standard_normal((n, C)) * 20).astype(np.float32)


def by_segment(eng, x, sn):
    """The reference: each segment denoised on its own, as a separate recording."""
    return np.concatenate([denoise_array(eng, x[a:b]) for a, b in gaps.segments(sn)])


def feed(pipe, x, sn, sizes):
    outs, a = [], 0
    while a < len(x):
        n = sizes()
        outs.append(pipe.push(x[a:a + n], sn[a:a + n]))
        a += n
    outs.append(pipe.finish())
    return np.concatenate([o.sample_numbers for o in outs]), np.concatenate([o.data for o in outs])


@pytest.mark.parametrize("arch", ARCHS)
def test_a_gap_ends_the_segment_and_nothing_is_invented(arch, engines):
    _, eng = engines[arch]
    x = data(700)
    sn = np.arange(700, dtype=np.int64) + 1000
    sn[333:] += 3000  # 3000 samples never arrived
    ref = by_segment(eng, x, sn)
    rng = np.random.default_rng(1)
    pipe = SamplePipeline(eng, C, max_block=64)
    got_sn, got = feed(pipe, x, sn, lambda: int(rng.integers(1, 90)))
    assert np.array_equal(got_sn, sn)  # every sample once, with its own number, nothing filled
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    assert (pipe.segments, pipe.gaps, pipe.restarts) == (2, 1, 0)
    # not the same as running the window across the gap
    assert np.abs(got - denoise_array(eng, x)).max() > 1e-3


@pytest.mark.parametrize("arch", ARCHS)
def test_a_counter_falling_back_is_a_restart(arch, engines):
    _, eng = engines[arch]
    x = data(500, seed=2)
    sn = np.concatenate([np.arange(100, 350), np.arange(0, 250)]).astype(np.int64)
    pipe = SamplePipeline(eng, C, max_block=128)
    got_sn, got = feed(pipe, x, sn, lambda: 100)
    assert np.array_equal(got_sn, sn)
    np.testing.assert_allclose(got, by_segment(eng, x, sn), rtol=1e-5, atol=1e-5)
    assert (pipe.segments, pipe.gaps, pipe.restarts) == (2, 0, 1)


@pytest.mark.parametrize("arch", ARCHS)
def test_ending_mid_window_and_pending(arch, engines):
    _, eng = engines[arch]
    x = data(157, seed=3)
    pipe = SamplePipeline(eng, C)
    out = pipe.push(x, 42)  # an int: the first sample's number
    assert pipe.pending == min(pipe.lag, len(x)) and len(out) == len(x) - pipe.pending
    assert np.array_equal(out.sample_numbers, np.arange(42, 42 + len(out)))
    tail = pipe.finish()
    assert np.array_equal(tail.sample_numbers, np.arange(42 + len(out), 42 + len(x)))
    np.testing.assert_allclose(np.concatenate([out.data, tail.data]), denoise_array(eng, x), rtol=1e-5, atol=1e-5)
    assert pipe.pending == 0 and pipe.expected is None and len(pipe.finish()) == 0
    # None continues the segment (0 for the very first sample)
    a = pipe.push(x[:50])
    b = pipe.push(x[50:])
    assert np.array_equal(np.concatenate([a.sample_numbers, b.sample_numbers, pipe.finish().sample_numbers]),
                          np.arange(len(x)))


@pytest.mark.parametrize("arch", ARCHS)
def test_a_jump_beyond_max_gap_is_a_new_acquisition_and_allocates_nothing(arch, engines):
    import tracemalloc

    from livedenoise.stream.ephys import ring_capacity

    _, eng = engines[arch]
    x = data(400)
    sn = np.arange(400, dtype=np.int64)
    sn[200:] += 10**12  # a sample number from another acquisition
    pipe = SamplePipeline(eng, C, max_block=64, max_gap=ring_capacity(eng.card, 64))
    tracemalloc.start()
    got_sn, got = feed(pipe, x, sn, lambda: 50)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20 << 20  # nothing in proportion to the jump
    assert np.array_equal(got_sn, sn)
    np.testing.assert_allclose(got, by_segment(eng, x, sn), rtol=1e-5, atol=1e-5)
    assert (pipe.segments, pipe.gaps, pipe.jumps, pipe.restarts) == (2, 0, 1, 0)
    assert pipe.ring.capacity == ring_capacity(eng.card, 64)


def test_segments_of_counters():
    assert gaps.segments(np.array([], np.int64)) == []
    assert gaps.segments(np.array([5, 6, 7, 10, 11, 3, 4])) == [(0, 3), (3, 5), (5, 7)]
    assert gaps.classify(None, 3) is gaps.Step.CONTINUE
    assert gaps.classify(5, 9) is gaps.Step.GAP and gaps.classify(5, 2) is gaps.Step.RESTART


def test_discard_drops_only_the_pending_samples(engines):
    _, eng = engines["block-ephys"]
    pipe = SamplePipeline(eng, C)
    out = pipe.push(data(100), 0)
    assert pipe.discard() == 100 - len(out) and pipe.expected is None
    nxt = pipe.push(data(100, seed=4), 100)  # same numbers continue, but as a new segment
    assert pipe.segments == 2 and nxt.sample_numbers[0] == 100


@pytest.mark.parametrize("arch", ARCHS)
def test_a_file_with_a_gap_is_denoised_segment_by_segment(arch, engines, tmp_path):
    path, eng = engines[arch]
    x = np.rint(data(2500, seed=5) / 0.195) * 0.195
    sn = np.arange(2500, dtype=np.int64) + 7
    sn[1234:] += 3000
    write_openephys(tmp_path / "rec", x, 30000.0, 0.195, sample_numbers=sn)
    rec = open_recording(tmp_path / "rec")
    rep = denoise_recording(rec, path, tmp_path / "den", engine=eng, chunk=700, progress=False)
    assert (rep["segments"], rep["gaps"], rep["samples"]) == (2, 1, 2500)
    den = open_recording(tmp_path / "den")
    assert np.array_equal(np.asarray(den.sample_numbers), sn)
    ref = by_segment(eng, rec.read(), sn)
    assert np.abs(den.read() - ref).max() <= 0.195 / 2 + 1e-4


@pytest.mark.parametrize("arch", ARCHS)
def test_a_segment_shorter_than_the_model_minimum_passes_through_raw_live_and_offline(engines, arch):
    """The one length rule inside a stream: a stretch between two gaps shorter than min_frames(card) is output
    raw (counted in too_short) whether it arrives in pieces or is denoised from a file; the others are denoised."""
    from livedenoise.models.registry import min_frames

    path, eng = engines[arch]
    need = min_frames(eng.card)
    short = need - 3
    x = data(400 + short + 400, seed=3)
    sn = np.r_[np.arange(400), np.arange(1000, 1000 + short), np.arange(5000, 5400)]
    rng = np.random.default_rng(4)
    pipe = SamplePipeline(eng, C)
    got_sn, got = feed(pipe, x, sn, lambda: int(rng.integers(1, 50)))
    np.testing.assert_array_equal(got_sn, sn)
    np.testing.assert_array_equal(got[400:400 + short], x[400:400 + short])  # raw, exactly
    assert pipe.too_short == short and pipe.gaps == 2
    offline = denoise_array(eng, x, sample_numbers=sn)
    np.testing.assert_allclose(got, offline, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(offline[:400], denoise_array(eng, x[:400]), rtol=1e-5, atol=1e-5)
    assert np.abs(offline[-400:] - x[-400:]).max() > 1e-3  # the long segments are denoised


@pytest.mark.parametrize("arch", ARCHS)
def test_train_and_denoise_refuse_the_same_too_short_recording(engines, arch, tmp_path):
    """`livedenoise train` and `livedenoise denoise` apply one minimum to a whole recording (exit 2, one line)."""
    import subprocess
    import sys

    from livedenoise.models.registry import min_frames

    path, eng = engines[arch]
    need = min_frames(eng.card)
    rec = tmp_path / "short.dat"
    (data(need - 1, seed=5) / 0.195).astype(np.int16).tofile(rec)
    args = ["--channels", str(C), "--sample-rate", "30000"]
    runs = [
        [sys.executable, "-m", "livedenoise", "train", str(rec), "--arch", arch, "--out", str(tmp_path / "m.pt"),
         "--steps", "1", "--quiet", "--pre", str(eng.card.pre), "--post", str(eng.card.post),
         "--omission", str(eng.card.omission), *args],
        [sys.executable, "-m", "livedenoise", "denoise", str(rec), str(tmp_path / "d.dat"), "--model", str(path),
         "--quiet", *args],
    ]
    for cmd in runs:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and f"needs at least {need}" in lines[0], r.stderr
    assert not (tmp_path / "d.dat").exists()


def test_a_failure_mid_recording_leaves_no_output_under_the_final_name(engines, tmp_path):
    path, eng = engines["block-ephys"]
    write_openephys(tmp_path / "rec", np.rint(data(5000, seed=9) / 0.195) * 0.195, 30000.0, 0.195)
    rec = open_recording(tmp_path / "rec")

    class FailsLater(type(eng)):  # the real engine, made to fail on its third batch (a disk or GPU fault)
        calls = 0

        def run(self, x, out=None):
            FailsLater.calls += 1
            if FailsLater.calls == 3:
                raise RuntimeError("engine fault")
            return super().run(x, out)

    failing = FailsLater.__new__(FailsLater)
    failing.__dict__.update(eng.__dict__)
    with pytest.raises(RuntimeError, match="engine fault"):
        denoise_recording(rec, path, tmp_path / "den", engine=failing, chunk=500, progress=False)
    assert not (tmp_path / "den").exists(), "an incomplete output never takes the final name"
    partial = [p for p in tmp_path.iterdir() if p.name.startswith("den") and "partial" in p.name]
    assert partial, "what was written is kept under the partial name"


def test_an_imaging_model_is_refused_naming_every_ephys_architecture(tmp_path):
    from livedenoise.errors import UserError
    from livedenoise.models import registry
    from livedenoise.models.nets import interp2d
    from livedenoise.models.card import ModelCard
    from livedenoise.stream.ephys import open_ephys_engine

    card = ModelCard("interp2d", interp2d.preset_params("lite"), "2p", 2, 0, 0, list(interp2d.window(2, 0, 0).offsets),
                     norm_mean=0.0, norm_std=1.0)
    save_checkpoint(tmp_path / "imaging.pt", card, build_network(card).state_dict())
    with pytest.raises(UserError) as err:
        open_ephys_engine(tmp_path / "imaging.pt", "torch")
    msg = str(err.value)
    assert "2p model (interp2d)" in msg and all(a in msg for a in registry.names("ephys"))
