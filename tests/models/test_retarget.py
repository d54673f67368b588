"""Moving weights to another window (train --init into a shorter lag): the fold rule, checked on the networks."""

from __future__ import annotations

import pytest
import torch

from livedenoise.models import registry
from livedenoise.models.retarget import fold_map, fold_weight, retarget


def test_fold_map_sends_each_old_offset_to_the_nearest_new_one_ties_to_the_past():
    old = list(range(-30, 0)) + list(range(1, 31))  # DeepInterpolation's 30 + 30
    new = list(range(-30, 0)) + [1]
    m = fold_map(old, new)
    assert list(m[:30]) == list(range(30))  # the past is kept, one to one
    assert set(m[30:].tolist()) == {30}  # t+1..t+30 all fold onto t+1
    assert list(fold_map([-2, 0, 2], [-1, 1])) == [0, 0, 1]  # 0 is as near to -1 as to +1: the past wins


def test_fold_weight_keeps_the_sum_over_offsets():
    w = torch.randn(8, 6, 3, 3)
    f = fold_weight(w, [-3, -2, -1, 1, 2, 3], [-3, -2, -1, 1])
    assert f.shape == (8, 4, 3, 3)
    torch.testing.assert_close(f.sum(1), w.sum(1))
    torch.testing.assert_close(f[:, 3], w[:, 3:].sum(1))
    grown = fold_weight(w[:, :2], [-1, 1], [-2, -1, 1])
    assert torch.equal(grown[:, 0], torch.zeros(8, 3, 3))  # an offset no old one folds onto starts at zero


@pytest.mark.parametrize("preset", ["lite", "fast"])
def test_a_temporally_constant_movie_gives_the_old_output_after_folding(preset):
    """The rule's promise: for frames that do not change over the folded offsets, the new window's network
    computes exactly what the old one did (`fast`: each offset owns 16 space-to-depth channels)."""
    torch.manual_seed(0)
    old = registry.make_card("interp2d", preset=preset, pre=4, post=4)
    new = registry.make_card("interp2d", preset=preset, pre=4, post=1)
    net_old = registry.build_network(old).eval()
    state, how = retarget(old, new, net_old.state_dict())
    assert "+2..+4" in how
    net_new = registry.build_network(new).eval()
    net_new.load_state_dict(state)
    frame = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net_new(frame.expand(1, new.n_inputs, 32, 32)),
                                   net_old(frame.expand(1, old.n_inputs, 32, 32)), rtol=1e-5, atol=1e-5)
        # and a moving movie does not: the check can fail
        moving = torch.randn(1, old.n_inputs, 32, 32)
        idx = [old.offsets.index(o) for o in new.offsets]
        assert not torch.allclose(net_new(moving[:, idx]), net_old(moving), atol=1e-4)


def test_cad3d_weights_serve_any_window():
    old = registry.make_card("cad3d", pre=8, post=1)
    new = registry.make_card("cad3d", pre=6, post=0)
    state = registry.build_network(old).state_dict()
    got, how = retarget(old, new, state)
    assert got is state and "convolutional in time" in how
    assert registry.build_network(new).read_index == len(new.offsets) - 1


def test_architectures_without_the_hook_refuse_and_arches_must_match():
    a = registry.make_card("interp-ephys", n_channels=8, pre=30, post=30, omission=1)
    b = registry.make_card("interp-ephys", n_channels=8, pre=30, post=1, omission=1)
    with pytest.raises(ValueError, match="cannot change window"):
        retarget(a, b, registry.build_network(a).state_dict())
    with pytest.raises(ValueError, match="cannot move"):
        retarget(registry.make_card("cad3d"), registry.make_card("interp2d"), {})


def test_the_faithful_ephys_network_can_shorten_its_window():
    a = registry.make_card("interp-ephys-di", n_channels=16)
    b = registry.make_card("interp-ephys-di", n_channels=16, pre=30, post=2, omission=1)
    state, _ = retarget(a, b, registry.build_network(a).state_dict())
    net = registry.build_network(b)
    net.load_state_dict(state)
    assert state["convs.0.conv.weight"].shape[1] == 32
