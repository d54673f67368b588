"""interp2d's space-to-depth (`fast`) U-Net: any frame size, locality, and what it reports of itself."""

import pytest
import torch

from livedenoise.models import registry
from livedenoise.models.nets.interp2d import UNet2d


@pytest.mark.parametrize("shape", [(16, 16), (37, 50), (130, 61)])
def test_fast_preset_predicts_one_frame_of_any_size(shape):
    card = registry.make_card("interp2d", preset="fast", pre=4, post=1)
    net = registry.build_network(card).eval()
    with torch.no_grad():
        y = net(torch.randn(2, card.n_inputs, *shape))
    assert y.shape == (2, 1, *shape) and torch.isfinite(y).all()


@pytest.mark.parametrize("kw", [{}, {"stem": 1}, {"unshuffle": 4, "stem": 1}, {"unshuffle": 2, "stem": 1}])
def test_receptive_field_bounds_how_far_one_pixel_reaches(kw):
    torch.manual_seed(0)
    net = UNet2d(3, [4, 6, 8], 2, **kw).eval()
    rf = net.spatial_receptive_field()
    x = torch.randn(1, 3, 256, 256)
    reach = 0
    with torch.no_grad():
        base = net(x)
        for y0, x0 in [(128, 128), (129, 130), (131, 131), (130, 129)]:  # every position within a 4x4 block
            bumped = x.clone()
            bumped[0, :, y0, x0] += 5.0
            moved = torch.nonzero((net(bumped) - base)[0, 0].abs() > 0)
            reach = max(reach, int((moved - torch.tensor([y0, x0])).abs().max()))
    assert 0 < 2 * reach + 1 <= rf
    assert 2 * reach + 1 > rf * 0.8, "the bound is close, not just any large number"


def test_space_to_depth_keeps_every_pixel_distinct():
    """The output at two pixels of one 4x4 block differs when only one of their inputs does: the block is not
    treated as one value."""
    torch.manual_seed(1)
    net = UNet2d(2, [8, 8], 1, unshuffle=4, stem=1).eval()
    x = torch.randn(1, 2, 32, 32)
    bumped = x.clone()
    bumped[0, :, 9, 9] += 3.0
    with torch.no_grad():
        d = (net(bumped) - net(x))[0, 0, 8:12, 8:12]
    assert len(torch.unique(d)) > 8


def test_space_to_depth_is_one_strided_layer_and_needs_a_1x1_stem():
    net = UNet2d(17, [32, 48, 64], 2, unshuffle=4, stem=1)
    first = net.encoders[0][0]
    assert isinstance(first, torch.nn.Conv2d) and first.kernel_size == (4, 4) and first.stride == (4, 4)
    assert first.in_channels == 17 and net.head.out_channels == 16
    with pytest.raises(ValueError, match="stem 1"):
        UNet2d(17, [32, 48], 2, unshuffle=4)
