"""Causality by perturbation, for every model and lag.

For output frame t, windows are built from a random movie with
`card.window.source_indices(t, last)` (the inference path). Changing frame t
(for self-supervised models), any frame after t + lag, or any frame inside the
omission band must leave output t bit-identical; changing an allowed input
frame must change it (so the test can fail).
"""

import numpy as np
import pytest
import torch

from livedenoise.models.nets import classic as baselines, cad3d, interp2d
from livedenoise.models.card import ModelCard
from livedenoise.models.registry import build_network, describe_receptive_field

N = 30
POSTS = (0, 1, 3)
OMISSIONS = (0, 1)


def model_card(arch, preset, pre, post, omission):
    mod = {"interp2d": interp2d, "cad3d": cad3d}[arch]
    spec = mod.window(pre, post, omission)
    return ModelCard(arch, mod.preset_params(preset), "2p", pre, post, omission, list(spec.offsets))


_NETS: dict = {}


def net_for(card):
    key = card.to_json()
    if key not in _NETS:
        torch.manual_seed(0)
        _NETS[key] = build_network(card).eval()
    return _NETS[key]


def output(card, movie, t, last):
    idx = card.window.source_indices(t, last=last)
    assert idx is not None
    with torch.no_grad():
        return net_for(card)(torch.from_numpy(movie[idx][None].astype(np.float32)))[0, 0].numpy()


def check(card, seed=0, size=32):
    rng = np.random.default_rng(seed)
    H = W = size
    movie = rng.standard_normal((N, H, W)).astype(np.float32)
    lag = card.lag
    assert lag == max(0, max(card.offsets))
    if card.post == 0:
        assert lag == 0
    else:
        assert lag <= card.post + card.omission
    for last in (N - 1, None):
        for t in (3, 18, N - 2):
            if last is None and t + lag > N - 1:
                continue
            ref = output(card, movie, t, last)
            forbidden = [j for j in range(N) if j > t + lag or (0 < abs(j - t) <= card.omission)]
            if not card.window.uses_target:
                forbidden.append(t)
            # all forbidden frames at once, then the closest ones one by one (t itself, t+lag+1, the band)
            singles = [j for j in forbidden if j == t or j == t + lag + 1 or abs(j - t) <= card.omission]
            for group in ([forbidden] if forbidden else []) + [[j] for j in singles]:
                m = movie.copy()
                m[group] += 10.0 * rng.standard_normal((len(group), H, W)).astype(np.float32)
                assert np.array_equal(output(card, m, t, last), ref), f"output {t} changed when frames {group} changed"
            allowed = sorted(set(card.window.source_indices(t, last=last).tolist()))
            for j in {allowed[0], allowed[-1]}:
                m = movie.copy()
                m[j] += 10.0 * rng.standard_normal((H, W)).astype(np.float32)
                assert not np.array_equal(output(card, m, t, last), ref), f"output {t} ignores allowed frame {j}"


@pytest.mark.parametrize("post", POSTS)
@pytest.mark.parametrize("omission", OMISSIONS)
def test_interp2d_lite(post, omission):
    check(model_card("interp2d", "lite", 4, post, omission), size=16)


@pytest.mark.parametrize("post", POSTS)
@pytest.mark.parametrize("omission", OMISSIONS)
def test_interp2d_fast_the_default(post, omission):
    check(model_card("interp2d", "fast", 4, post, omission), size=16)


@pytest.mark.parametrize("post", POSTS)
@pytest.mark.parametrize("omission", OMISSIONS)
def test_interp2d_di(post, omission):
    check(model_card("interp2d", "di", 3, post, omission))


@pytest.mark.parametrize("post", POSTS)
@pytest.mark.parametrize("omission", OMISSIONS)
def test_cad3d(post, omission):
    check(model_card("cad3d", "rt", 6, post, omission), size=16)


@pytest.mark.parametrize("post", POSTS)
@pytest.mark.parametrize("kind", baselines.KINDS)
def test_classic(kind, post):
    # classic filters read the frame itself, so they have no omission band (omission 1 is refused)
    card = baselines.classic_card(kind, pre=4, post=post, sigma_xy=1.0)
    check(card, size=16)
    with pytest.raises(ValueError):
        baselines.window(4, post, 1, kind)


@pytest.mark.parametrize("card", [
    model_card("interp2d", "lite", 8, 1, 0),
    model_card("interp2d", "fast", 8, 1, 0),
    model_card("interp2d", "di", 30, 30, 1),
    model_card("cad3d", "rt", 8, 0, 0),
    model_card("cad3d", "rt", 8, 3, 1),
    baselines.classic_card("gauss", pre=8, post=2, sigma_t=3.0, sigma_xy=1.0),
], ids=lambda c: f"{c.arch}-{c.pre}-{c.post}-{c.omission}")
def test_every_model_reports_receptive_field_and_lag(card):
    rf = describe_receptive_field(card)
    assert rf["lag"] == card.lag
    assert rf["temporal_span"] == [min(card.offsets), max(card.offsets)]
    assert rf["spatial"][0] >= 1 and rf["inputs"] == card.n_inputs
    assert rf["uses_target"] == (card.arch == "classic")
