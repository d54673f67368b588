"""Checkpoints keep loading: the demo model shipped until issue 14 (interp2d lite, kept here as a test file)
loads and gives the same output as before the registry change; the model shipped now is the default
architecture and preset, with its innovation step tuned, and runs through the engines."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import torch

from livedenoise.models import registry
from livedenoise.models.checkpoint import load_model

OLD_SHIPPED = Path(__file__).parent / "data" / "demo-lite-post1.pt"
SHIPPED = Path(str(resources.files("livedenoise") / "data" / "demo-fast-post1.pt"))

# net(x)[:, 0] for x = default_rng(1234).standard_normal((2, 9, 24, 20)), computed before the change
MEAN, STD = 0.002690593944862485, 0.03525625541806221
FIRST = [-0.12455230951309204, -0.05726352706551552, 0.004312314558774233, 0.03351109102368355]  # y[0, 0, :4]
LAST = [-0.02692185901105404, -0.02544092945754528, -0.05190553516149521]  # y[1, -1, -3:]


def _input(card) -> np.ndarray:
    return np.random.default_rng(1234).standard_normal((2, card.n_inputs, 24, 20)).astype(np.float32)


def _check(y: np.ndarray) -> None:
    assert y.shape == (2, 24, 20)
    np.testing.assert_allclose(y[0, 0, :4], FIRST, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(y[1, -1, -3:], LAST, rtol=1e-4, atol=1e-6)
    assert abs(float(y.mean()) - MEAN) < 1e-6 and abs(float(y.std()) - STD) < 1e-6


def test_the_old_demo_model_loads_with_its_card_and_gives_the_old_output():
    card, net = load_model(OLD_SHIPPED)
    assert card.arch == "interp2d" and card.params == {"convs": 2, "preset": "lite", "widths": [16, 32, 64]}
    assert card.offsets == [-8, -7, -6, -5, -4, -3, -2, -1, 1] and card.lag == 1
    assert registry.arch_for(card).name == "interp2d" and registry.min_frames(card) == 2
    with torch.no_grad():
        y = net(torch.from_numpy(_input(card)))[:, 0].numpy()
    _check(y)


def test_the_old_demo_model_through_the_torch_engine():
    from livedenoise.export.engines import open_engine

    with open_engine(OLD_SHIPPED, "torch", device="cpu") as eng:
        _check(eng.run(_input(eng.card)))


def test_the_shipped_demo_model_is_the_default_model_with_its_innovation_step_tuned(tmp_path):
    from livedenoise.commands.demo import SHIPPED_MODEL
    from livedenoise.export.engines import open_engine
    from livedenoise.export.onnx_export import export_onnx

    assert SHIPPED.name == SHIPPED_MODEL
    card, _ = load_model(SHIPPED)
    default = registry.make_card(registry.default_name("2p"))
    assert (card.arch, card.params, card.offsets) == (default.arch, default.params, default.offsets)
    assert card.innovation and card.innovation["k"] > 0
    x = np.random.default_rng(0).standard_normal((2, card.n_inputs, 32, 48)).astype(np.float32)
    onnx_path, _ = export_onnx(SHIPPED, tmp_path / "demo.onnx", frame_shape=(32, 48))
    with open_engine(SHIPPED, "torch", device="cpu") as a, open_engine(onnx_path, "onnxruntime") as b:
        np.testing.assert_allclose(b.run(x), a.run(x), rtol=1e-4, atol=1e-4 * float(np.abs(a.run(x)).max()))
