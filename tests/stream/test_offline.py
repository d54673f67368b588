import hashlib

import numpy as np
import pytest
import tifffile
import torch

from livedenoise.errors import UserError
from livedenoise.export.engines import open_engine
from livedenoise.models.nets import interp2d
from livedenoise.models.card import ModelCard
from livedenoise.models.checkpoint import save_checkpoint
from livedenoise.stream.offline import denoise_file, denoise_movie
from livedenoise.models.norm import denormalise, normalise
from livedenoise.io.readers import ArrayMovie, open_movie
from livedenoise.io.writers import open_writer


def make_model(path, pre=3, post=1, omission=0, mean=100.0, std=20.0, frame_shape=None, seed=0):
    """A real interp2d lite checkpoint with random (untrained) weights."""
    card = ModelCard("interp2d", interp2d.preset_params("lite"), "2p", pre, post, omission,
                     list(interp2d.window(pre, post, omission).offsets), norm_mean=mean, norm_std=std,
                     frame_shape=frame_shape)
    torch.manual_seed(seed)
    return save_checkpoint(path, card, interp2d.build(card).state_dict())


def movie(t=23, h=20, w=24, dtype=np.int16, seed=0):
    return (100 + 20 * np.random.default_rng(seed).standard_normal((t, h, w))).astype(dtype)


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(tmp_path, data, model, name="out.tif", **kw):
    src = ArrayMovie(data, tmp_path / "in.npy")
    engine = open_engine(model, "torch")
    with open_writer(tmp_path / name, len(data), data.shape[1:], kw.pop("writer_dtype", data.dtype)) as wr:
        stats = denoise_movie(src, engine, wr, progress=False, **kw)
    with open_movie(tmp_path / name) as m:
        return m.read(0, len(m)), stats


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("m") / "lite.pt")


def test_same_frame_count_and_dtype(tmp_path, model):
    for dtype in (np.int16, np.uint16, np.float32):
        data = movie(dtype=dtype)
        out, stats = run(tmp_path, data, model, name=f"o_{np.dtype(dtype).name}.tif")
        assert out.shape == data.shape and out.dtype == data.dtype
        assert stats.frames == len(data) and stats.passthrough == 0


def test_output_is_the_model_applied_to_each_window(tmp_path, model):
    data = movie()
    out, _ = run(tmp_path, data, model, out_dtype="float32", writer_dtype=np.float32, batch=4)
    engine = open_engine(model, "torch")
    card = engine.card
    for t in (0, 1, 11, len(data) - 1):  # edges use reflected windows
        idx = card.window.source_indices(t, last=len(data) - 1)
        win = normalise(data[idx], card.norm_mean, card.norm_std)[None]
        want = denormalise(engine.run(win), card.norm_mean, card.norm_std)[0]
        np.testing.assert_allclose(out[t], want, rtol=1e-5, atol=1e-3)


def test_repeat_runs_are_bit_identical_and_chunking_does_not_matter(tmp_path, model):
    data = movie(t=40)
    a, _ = run(tmp_path, data, model, name="a.tif", batch=4, chunk=4)
    b, _ = run(tmp_path, data, model, name="b.tif", batch=4, chunk=4)
    c, _ = run(tmp_path, data, model, name="c.tif", batch=4, chunk=1000)
    d, _ = run(tmp_path, data, model, name="d.tif", batch=4, chunk=9)  # rounded up to 12
    assert sha(tmp_path / "a.tif") == sha(tmp_path / "b.tif")
    np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(a, d)


def test_out_of_range_predictions_are_clipped_not_wrapped(tmp_path):
    # huge normalisation std: the untrained net's outputs map far outside int16
    model = make_model(tmp_path / "wild.pt", mean=0.0, std=1e6, seed=3)
    data = movie()
    f32, _ = run(tmp_path, data, model, name="f.tif", out_dtype="float32", writer_dtype=np.float32)
    i16, _ = run(tmp_path, data, model, name="i.tif")
    info = np.iinfo(np.int16)
    assert f32.max() > info.max or f32.min() < info.min
    np.testing.assert_array_equal(i16, np.clip(np.rint(f32), info.min, info.max).astype(np.int16))
    u16, _ = run(tmp_path, data.astype(np.uint16), model, name="u.tif")
    np.testing.assert_array_equal(u16, np.clip(np.rint(f32), 0, 65535).astype(np.uint16))


def test_causal_first_frame_passes_through(tmp_path):
    model = make_model(tmp_path / "causal.pt", pre=4, post=0)
    data = movie()
    out, stats = run(tmp_path, data, model)
    assert stats.passthrough == 1
    np.testing.assert_array_equal(out[0], data[0])
    assert not np.array_equal(out[1], data[1])


def test_too_few_frames_follows_the_one_length_rule(tmp_path, model):
    """interp2d needs min_frames = 2 (the edge rule fills a window of 4 from 2 frames); shorter is refused."""
    from livedenoise.models.registry import min_frames

    assert min_frames(open_engine(model, "torch").card) == 2
    with pytest.raises(UserError, match="has 1 frames but this interp2d model needs at least 2"):
        run(tmp_path, movie(t=1), model)
    out, stats = run(tmp_path, movie(t=2), model, name="two.tif")
    assert len(out) == 2 and stats.passthrough == 0


def test_frame_size_mismatch(tmp_path):
    model = make_model(tmp_path / "fixed.pt", frame_shape=[32, 32])
    with pytest.raises(UserError, match="20x24 frames but this exported model is fixed to 32x32 frames; export "
                                        "the .pt checkpoint again with --frame-shape 20 24"):
        run(tmp_path, movie(), model)
    assert not (tmp_path / "out.tif").exists()


def test_denoise_file_refuses_to_overwrite_input(tmp_path, model):
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, movie())
    before = sha(src)
    for dst in (src, tmp_path / "." / "in.tif"):
        with pytest.raises(UserError, match="is the input file"):
            denoise_file(src, dst, model, progress=False)
    (tmp_path / "link.tif").hardlink_to(src)
    with pytest.raises(UserError, match="is the input file"):
        denoise_file(src, tmp_path / "link.tif", model, progress=False)
    assert sha(src) == before


def test_denoise_file_h5_and_float32(tmp_path, model):
    src = tmp_path / "in.tif"
    data = movie()
    tifffile.imwrite(src, data)
    stats = denoise_file(src, tmp_path / "out.h5", model, out_dtype="float32", progress=False)
    assert stats.dtype == "float32"
    with open_movie(tmp_path / "out.h5") as m:
        assert m.shape == data.shape and m.dtype == np.float32
    with pytest.raises(UserError, match="unknown output format"):
        denoise_file(src, tmp_path / "out.npy", model, progress=False)


def test_reads_are_bounded_by_chunk_plus_window(tmp_path, model):
    data = movie(t=60)

    class Recording(ArrayMovie):
        sizes: list = []

        def read(self, start, stop):
            self.sizes.append(stop - start)
            return super().read(start, stop)

    src = Recording(data, tmp_path / "in.npy")
    engine = open_engine(model, "torch")
    with open_writer(tmp_path / "o.tif", len(data), data.shape[1:], data.dtype) as wr:
        denoise_movie(src, engine, wr, batch=4, chunk=8, progress=False)
    lo, hi = engine.card.window.span  # (-3, 1)
    chunks = [n for n in src.sizes if n > 1]
    singles = [n for n in src.sizes if n == 1]  # the movie's statistics: one frame at a time (models/norm.py)
    assert len(chunks) == 60 // 8 + 1
    assert max(src.sizes) <= 8 + (hi - lo)
    assert len(singles) <= 60


def _cells_movie(n, scale, seed, h=40, w=40):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    cells = sum(np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8.0) for cy, cx in [(10, 10), (25, 30), (30, 12)])
    clean = np.stack([scale * (200 + 600 * cells * (1 + 0.5 * np.sin(t / 5.0 + cells))) for t in range(n)])
    return rng.poisson(clean).astype(np.uint16), clean


def test_a_model_serves_a_dimmer_session_by_its_own_statistics(tmp_path):
    from livedenoise.models.checkpoint import save_checkpoint as save
    from livedenoise.train.imaging import TrainConfig, train

    bright, _ = _cells_movie(120, 1.0, 0)
    card, state, _ = train([bright], TrainConfig(arch="interp2d", preset="lite", pre=3, post=1, steps=60, crop=32,
                                                 batch=4, progress=False, tune_innovation=False, val_fraction=0.2))
    model = save(tmp_path / "m.pt", card, state)
    dim, clean = _cells_movie(60, 0.1, 1)  # another session, 10x dimmer
    np.save(tmp_path / "dim.npy", dim)
    stats = denoise_file(tmp_path / "dim.npy", tmp_path / "own.tif", model, out_dtype="float32", progress=False)
    own = tifffile.imread(tmp_path / "own.tif")
    assert stats.norm["mode"] == "data" and "differ from the training movies" in (stats.norm["note"] or ""), stats.norm
    assert own.mean() == pytest.approx(dim.mean(), rel=0.05)
    assert np.corrcoef(own.mean(0).ravel(), clean.mean(0).ravel())[0, 1] > 0.9
    # the card's statistics (the old behaviour) move the brightness and say so
    stats = denoise_file(tmp_path / "dim.npy", tmp_path / "card.tif", model, out_dtype="float32", progress=False,
                         norm="card")
    moved = tifffile.imread(tmp_path / "card.tif")
    assert "may not fit" in stats.norm["note"]
    assert abs(moved.mean() / dim.mean() - 1) > abs(own.mean() / dim.mean() - 1)
