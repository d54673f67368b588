"""Multiply-adds per frame, counted on the network's layers (models/cost.py)."""

import pytest

from livedenoise.models import registry
from livedenoise.models.cost import multiply_adds


def _unet_macs(n_in: int, widths: list[int], convs: int, h: int, w: int, s: int = 1, stem: int = 3) -> int:
    """The interp2d U-Net's multiply-adds written out level by level (3x3 convs, 2x2 pools, 1x1 head; the first
    layer stem x stem, after an s x s space-to-depth step)."""
    px = (h // s) * (w // s)
    total, cin = 0, n_in * s * s
    for level, width in enumerate(widths):
        p = px // 4 ** level
        first = stem * stem if level == 0 else 9
        total += p * (first * cin * width + 9 * (convs - 1) * width * width)  # encoder (or bottleneck) block
        cin = width
    for level in reversed(range(len(widths) - 1)):
        p, width = px // 4 ** level, widths[level]
        total += p * 9 * ((cin + width) * width + (convs - 1) * width * width)  # decoder block after the skip
        cin = width
    return total + px * widths[0] * s * s  # head


@pytest.mark.parametrize("preset", ["lite", "fast"])
def test_interp2d_count_matches_the_layers_written_out(preset):
    card = registry.make_card("interp2d", preset=preset, pre=8, post=1, omission=0)
    p = card.params
    expected = _unet_macs(card.n_inputs, list(p["widths"]), p["convs"], 64, 96, p.get("unshuffle", 1),
                          p.get("stem") or 3)
    assert multiply_adds(card, (64, 96)) == expected


def test_the_default_model_needs_a_quarter_of_lites_operations():
    default = registry.make_card("interp2d", pre=8, post=1, omission=0)
    lite = registry.make_card("interp2d", preset="lite", pre=8, post=1, omission=0)
    assert default.params["preset"] == "fast"
    ratio = multiply_adds(lite, (512, 512)) / multiply_adds(default, (512, 512))
    assert ratio > 3.5, ratio

