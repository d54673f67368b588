"""What a network costs per output frame: multiply-adds counted on its layers.

`multiply_adds(card, frame_shape)` builds the card's network (random weights;
the count does not depend on them), runs one window of zeros through it and
adds up, per convolution and linear layer, output elements x input channels per
group x kernel size. Pooling, activations, padding and resampling are left out
(they are not multiply-adds and are small next to the convolutions). A FLOP
count is twice the multiply-adds; `bench stream` reports both against this
machine's measured matrix-multiply rate.
"""

from __future__ import annotations

import math


def multiply_adds(card, frame_shape: tuple[int, ...]) -> int:
    """Multiply-adds for one output frame of `frame_shape` ((H, W) or an fMRI volume), batch 1.

    Errors: whatever building or running the network raises (e.g. a frame too small for it). Filters
    that convolve with functional calls rather than layers (classic) count 0.
    """
    import torch
    from torch import nn

    from livedenoise.models import registry

    net = registry.build_network(card)
    total = [0]

    def conv(mod, _inp, out):
        total[0] += out.numel() * (mod.in_channels // mod.groups) * math.prod(mod.kernel_size)

    def linear(mod, _inp, out):
        total[0] += out.numel() * mod.in_features

    kinds = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
    hooks = [m.register_forward_hook(conv) for m in net.modules() if isinstance(m, kinds)]
    hooks += [m.register_forward_hook(linear) for m in net.modules() if isinstance(m, nn.Linear)]
    try:
        net.eval()
        with torch.no_grad():
            net(torch.zeros((1, card.n_inputs, *frame_shape)))
    finally:
        for h in hooks:
            h.remove()
    return int(total[0])
