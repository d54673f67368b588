"""interp-ephys-di: DeepInterpolation's published Neuropixels U-Net (parity with Keras: tests/export/foreign)."""

import pytest
import torch

from livedenoise.models import registry
from livedenoise.models.nets.interp_ephys_di import DIEphysUNet


def test_card_has_deepinterpolations_window_and_layout():
    card = registry.make_card("interp-ephys-di", n_channels=384)
    assert (card.pre, card.post, card.omission, card.lag) == (30, 30, 1, 31)
    assert card.offsets[:2] == [-31, -30] and card.offsets[-1] == 31 and 0 not in card.offsets
    assert card.layout == "checkerboard" and card.frame_shape == [384, 2] and registry.min_frames(card) == 63
    with pytest.raises(ValueError, match="checkerboard"):
        registry.make_card("interp-ephys-di", n_channels=8, layout="dense")


@pytest.mark.parametrize("channels", [384, 12, 17])
def test_any_channel_count_gives_one_sample_of_every_site(channels):
    card = registry.make_card("interp-ephys-di", n_channels=channels)
    net = registry.build_network(card).eval()
    with torch.no_grad():
        y = net(torch.randn(2, 60, channels, 2))
    assert y.shape == (2, 1, channels, 2) and torch.isfinite(y).all()


def test_the_layers_are_deepinterpolations():
    net = DIEphysUNet(60, [64, 128, 256, 512, 1024])
    kernels = [tuple(c.conv.kernel_size) for c in net.convs]
    assert kernels == [(2, 2)] + [(3, 1)] * 7 + [(2, 2)]
    assert [c.conv.out_channels for c in net.convs] == [64, 128, 256, 512, 1024, 512, 256, 128, 64]
    assert [c.conv.in_channels for c in net.convs][5:] == [1024 + 512, 512 + 256, 256 + 128, 128 + 64]
    assert sum(p.numel() for p in net.parameters()) == 5_253_057  # Keras count_params() of unet_single_ephys_1024 with 60 inputs
