"""An fMRI (volumes) model exports to ONNX at a volume size, and onnxruntime denoises a run as torch does."""

import numpy as np
import pytest
import torch

from livedenoise.errors import UserError
from livedenoise.export.engines import open_engine
from livedenoise.export.onnx_export import export_onnx
from livedenoise.models import registry
from livedenoise.models.checkpoint import save_checkpoint
from livedenoise.stream.offline import denoise_array


def test_fmri_blind_exports_at_a_volume_size_and_runs_on_onnxruntime(tmp_path):
    torch.manual_seed(0)
    card = registry.make_card("fmri-blind", pre=3, post=1, norm_mean=100.0, norm_std=5.0)
    net = registry.build_network(card)
    pt = save_checkpoint(tmp_path / "f.pt", card, net.state_dict())
    with pytest.raises(UserError, match="three positive numbers I J K"):
        export_onnx(pt, tmp_path / "bad.onnx", frame_shape=(8, 9))
    onnx_path, out_card = export_onnx(pt, tmp_path / "f.onnx", frame_shape=(8, 9, 7))
    assert out_card.frame_shape == [8, 9, 7] and out_card.layout == "volumes"
    run = np.random.default_rng(0).normal(100.0, 5.0, (9, 8, 9, 7)).astype(np.float32)
    ort = open_engine(onnx_path, "onnxruntime")
    ref = open_engine(pt, "torch")
    a = denoise_array(ort, run, norm="card")
    b = denoise_array(ref, run, norm="card")
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)
    assert not np.allclose(a, run)
