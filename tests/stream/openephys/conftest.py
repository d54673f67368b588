"""Fixtures for the Open Ephys sidecar tests: free ports, a small recording, tiny models."""

import numpy as np
import pytest
import torch

from livedenoise.models.nets import block_ephys, interp_ephys
from livedenoise.stream.loopback import free_port
from livedenoise.models.checkpoint import save_checkpoint
from livedenoise.models.registry import build_network
from livedenoise.sim.ephys import simulate_ephys

C = 16


@pytest.fixture
def ports():
    """Two data ports p, each with p + 1 free for its heartbeats."""
    p = free_port(span=4)
    return [p, p + 2]


@pytest.fixture(scope="session")
def small_recording(tmp_path_factory):
    d = tmp_path_factory.mktemp("oe_sim")
    simulate_ephys(d, n_channels=C, duration=0.4, save_clean=False, seed=3)
    return d


def _model(path, card):
    torch.manual_seed(0)
    net = build_network(card)
    with torch.no_grad():  # make the untrained nets non-trivial but bounded
        for p in net.parameters():
            p.mul_(0.5)
    save_checkpoint(path, card, net.state_dict())
    return path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("oe_models")
    return {
        "block-ephys": _model(d / "block.pt", block_ephys.make_card(C, 30, 30, 1, "fast", norm_mean=0.0, norm_std=10.0)),
        "interp-ephys": _model(d / "interp.pt", interp_ephys.make_card(C, 4, 2, 1, "lite", norm_mean=0.0, norm_std=10.0)),
    }


__all__ = ["C", "np"]
