"""ONNX export of every architecture: checker, opset, card in metadata, dynamic batch, fp32 parity."""

import json

import numpy as np
import onnx
import pytest

from livedenoise.errors import UserError
from livedenoise.export import parity
from livedenoise.export.engines.base import CARD_KEY, read_onnx_card
from livedenoise.export.engines.onnxruntime import OnnxRuntimeEngine
from livedenoise.export.engines.torch import TorchEngine
from livedenoise.export.onnx_export import export_onnx, resolve_frame_shape
from livedenoise.models.checkpoint import load_model
from tests.export.checkpoints import MODELS, arch_present, make_checkpoint


@pytest.mark.parametrize("name,arch,preset,pre,post,omission,fs", MODELS, ids=[m[0] for m in MODELS])
def test_export_passes_checker_and_parity(tmp_path, name, arch, preset, pre, post, omission, fs):
    if not arch_present(arch):
        pytest.skip(f"architecture {arch} is not in this build yet")
    ckpt = make_checkpoint(tmp_path / "m.pt", arch, preset, pre, post, omission)
    out, card = export_onnx(ckpt, tmp_path / "m.onnx", frame_shape=fs)

    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    meta = {p.key: p.value for p in model.metadata_props}
    embedded = json.loads(meta[CARD_KEY])
    assert embedded["frame_shape"] == list(fs)
    assert embedded["offsets"] == card.offsets and embedded["arch"] == arch
    assert read_onnx_card(out).frame_shape == list(fs)
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param == "batch"

    ref_card, net = load_model(ckpt)
    torch_engine = TorchEngine(ref_card, net)
    ort = OnnxRuntimeEngine(out)
    assert ort.input_shape == (card.n_inputs, *fs)
    windows, source = parity.movie_windows(card, fs, None, n=5)
    assert windows.shape == (5, card.n_inputs, *fs)
    res = parity.check(torch_engine, ort, windows, target="onnx", path=out, limit=parity.ONNX_FP32_LIMIT, source=source, batch=5)
    assert res.ok, res
    # dynamic batch: 1 and 3 give the same frames as one batch of 5
    one = ort.run(windows[:1])
    three = ort.run(windows[1:4])
    full = ort.run(windows)
    np.testing.assert_allclose(np.concatenate([one, three]), full[:4], rtol=0, atol=1e-5 * np.abs(full).max())


def test_opset_below_17_is_refused(tmp_path):
    ckpt = make_checkpoint(tmp_path / "m.pt")
    with pytest.raises(UserError, match="opset must be >= 17"):
        export_onnx(ckpt, tmp_path / "m.onnx", frame_shape=(16, 16), opset=13)


def test_frame_shape_rule(tmp_path):
    ckpt = make_checkpoint(tmp_path / "m.pt", frame_shape=[48, 64])
    card, _ = load_model(ckpt)
    assert resolve_frame_shape(card) == (48, 64)
    assert resolve_frame_shape(card, (32, 32)) == (32, 32)
    card.frame_shape = None
    assert resolve_frame_shape(card, None, fallback=(20, 30)) == (20, 30)
    with pytest.raises(UserError, match="--frame-shape"):
        resolve_frame_shape(card)
    # the card's frame size is used (and kept) when no --frame-shape is given
    out, emb = export_onnx(ckpt, tmp_path / "m.onnx")
    assert emb.frame_shape == [48, 64]
    assert OnnxRuntimeEngine(out).input_shape[1:] == (48, 64)


def test_innovation_settings_travel_with_the_model_into_onnx(tmp_path):
    from livedenoise.models.checkpoint import read_checkpoint, save_checkpoint

    card, state = read_checkpoint(make_checkpoint(tmp_path / "m.pt", pre=3, post=0))
    card.innovation = {"sigma_xy": 2.0, "k": 8.0, "exclude": 2}  # as `train` stores it
    save_checkpoint(tmp_path / "tuned.pt", card, state)
    onnx_path, _ = export_onnx(tmp_path / "tuned.pt", tmp_path / "tuned.onnx", frame_shape=(16, 24))
    assert read_onnx_card(onnx_path).innovation == {"sigma_xy": 2.0, "k": 8.0, "exclude": 2}
