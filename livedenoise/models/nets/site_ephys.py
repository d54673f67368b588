"""`site-ephys`: a per-site blind spot, with the probe's neighbouring sites at the same instant as inputs.

Why (issue 18): `block-ephys` hides samples t - omission .. t + omission of
*every* channel, so it must interpolate a spike's peak from its flanks, and
shrinks and smooths every spike. The self-supervision rule (Noise2Self,
Batson & Royer 2019; DeepInterpolation, Lecoq et al. 2021) only needs the
noise of the *predicted* value to be independent of the inputs. Thermal noise
is independent between recording sites, so for output (site c, sample t) this
network reads

    site c itself:   samples t - omission - pre .. t - omission - 1 and
                     t + omission + 1 .. t + omission + post (never t, never the hidden band)
    the K nearest other sites (by probe geometry, µm):
                     samples t - nb_before .. t + nb_after, t itself included

and nothing else. Noise shared by the sites (common-mode) is not hidden by
this rule and passes through as signal; referencing (CMR) removes it, as for
the raw data.

Network (all per site, weights shared by every site):
- own branch: F1 temporal filters over site c's window whose taps on the
  hidden band are held at zero by a fixed mask (a blind-spot kernel);
- neighbour branch: F2 short temporal filters (span nb_before + nb_after + 1)
  applied to every site, then gathered from the K neighbours of site c in the
  order of their distance (ties: by vertical, then horizontal offset); a site
  with fewer than K neighbours reads zeros for the missing ones;
- a per-site MLP (1 x 1 convolutions, ReLU) over [own features, K x F2
  neighbour features] and a linear output. Nothing mixes sites after the gather
  (a second mix would bring site c's own sample t back through a neighbour),
  and nothing mixes time after the first filters (it would bring the hidden band
  back through a neighbouring output).

Output (presets `fast`, `base`: `params["posterior"]`): the head gives the mean mu and log
variance v of the hidden sample given the blind inputs; with the site's noise variance
sigma^2 (learned per site) the output is the Bayes posterior mean
(mu sigma^2 + x v) / (v + sigma^2) with the site's own sample x(c, t) (Laine, Karras,
Lehtinen & Aila 2019, "High-quality self-supervised deep image denoising"): where the model
is sure (v small) it is mu, at a spike it keeps more of the recorded peak. Trained by the
Gaussian likelihood of the hidden sample (`nll`). Then `params["keep_noise"]` k gives back
that fraction of what was removed: out = post + k (x - post) (0.6 in the presets: on the
sorting benchmark it keeps the spike amplitude >= 0.97 on three seeds, and the sorter finds as
many units as with 0.35-0.65; docs/benchmarks.md). Preset `blind` outputs mu itself (L2).
So the blind spot holds for the head (`prior`), and the output reads x(c, t) -- never
x(c, t +- 1 .. omission) -- with weight k + (1 - k) v / (v + sigma^2) < 1.

The geometry lives in the card (`params["positions"]`, (C, 2) µm, in the
recording's channel order; `params["neighbours"]`, (C, K) site indices, -1 =
none), so a model is made for one probe layout and channel count; the pipeline
refuses another channel count.

I/O contract: `block-ephys`'s block contract (card.layout "block"): input
(B, 1, C, T_in) normalised samples, channel-major; output (B, 1, C, T_in -
ctx_before - ctx_after) for input samples ctx_before .. T_in - ctx_after - 1,
where ctx_before = max(pre + omission, nb_before) and ctx_after = post +
omission when post > 0, else 0 (the card's lag). `post = 0` is the causal
variant: site c's own past and its neighbours up to sample t; no lag.
Edges: callers pad normalised data with zeros (the mean), offline and live alike.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from livedenoise.models.registry import Arch
from livedenoise.models.window import WindowSpec

LAYOUTS = ("block",)
GEOMETRY = True
"""The card holds the probe's site positions: `train` reads them from the recording (io/probe_geometry.py)."""
PRESETS: dict[str, dict] = {
    # CPU: one core, 384 channels at 30 kHz (see docs/benchmarks.md); posterior mean (Bayes with the site's own
    # sample), 0.6 of the removed noise given back: spike amplitude >= 0.97 on the sorting benchmark (issue 18)
    "fast": {"own_filters": 8, "nb_filters": 4, "nb_span": 6, "k": 8, "width": 16, "depth": 2, "posterior": True,
             "keep_noise": 0.6},
    # more capacity (GPU, or fewer channels)
    "base": {"own_filters": 16, "nb_filters": 4, "nb_span": 8, "k": 12, "width": 32, "depth": 2, "posterior": True,
             "keep_noise": 0.6},
    # the blind prediction itself (the conditional mean without the site's own sample): smaller, shrinks spikes more
    "blind": {"own_filters": 8, "nb_filters": 2, "nb_span": 4, "k": 8, "width": 12, "depth": 1, "posterior": False,
              "keep_noise": 0.0},
}
DEFAULTS = {"pre": 30, "post": 30, "omission": 1}
TILE = 64
"""Output samples per pass (`Arch.tile`; PyTorch eager and onnxruntime alike): a tile's intermediates stay in the
CPU's cache. One core, 384 channels: 64 samples ran 1.5x faster than one pass over a 4096-sample block
(docs/benchmarks.md, issue 18)."""

ARCH = Arch(
    name="site-ephys",
    modality="ephys",
    trainer="ephys",
    default=True,
    layout="block",
    cpu_backend="onnxruntime",
    tile=TILE,
    layouts=LAYOUTS,
    presets=PRESETS,
    defaults={**DEFAULTS, "preset": "fast", "loss": "nll", "crop": 256, "batch": 8, "lr": 2e-3},
    summary="per-site blind spot: each site's own flanks plus its probe neighbours at the same instant",
)


def window(pre: int, post: int, omission: int) -> WindowSpec:
    """The predicted site's own window (neighbours' samples are described in the module docstring)."""
    return WindowSpec.interp(pre, post, omission)


def context(pre: int, post: int, omission: int, nb_span: int) -> tuple[int, int]:
    """(samples needed before the first output, samples needed after the last)."""
    after = post + omission if post > 0 else 0
    return max(pre + omission, nb_span), after


def neighbours(positions, k: int) -> np.ndarray:
    """(C, k) int64: the k nearest other sites of each site (µm positions (C, 2)), -1 where there are fewer.

    Order: distance, then vertical offset, then horizontal offset (so that slot j
    is the same relative place on every site of a regular probe). A site never
    lists itself, nor another site at the same position (a duplicate would carry
    the same noise as the predicted site).
    """
    pos = np.asarray(positions, np.float64)
    if pos.ndim != 2 or pos.shape[1] != 2 or not np.all(np.isfinite(pos)):
        raise ValueError(f"positions must be finite (channels, 2) µm, got shape {pos.shape}")
    C = pos.shape[0]
    out = np.full((C, k), -1, np.int64)
    for c in range(C):
        d = pos - pos[c]
        dist = np.hypot(d[:, 0], d[:, 1])
        cand = [j for j in np.lexsort((d[:, 0], d[:, 1], np.round(dist, 6))) if dist[j] > 1e-6]
        out[c, :min(k, len(cand))] = cand[:k]
    return out


def preset_params(preset: str, pre: int = 30, post: int = 30, omission: int = 1, positions=None) -> dict:
    if preset not in PRESETS:
        raise ValueError(f"unknown site-ephys preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if pre < 1:
        raise ValueError("site-ephys needs pre >= 1")
    p = dict(PRESETS[preset])
    before, after = context(pre, post, omission, int(p["nb_span"]))
    p.update({
        "preset": preset,
        "nb_before": int(p["nb_span"]),
        "nb_after": min(int(p["nb_span"]), after),
        "ctx_before": before,
        "ctx_after": after,
        "io": "input (B, 1, C, T_in) normalised; output (B, 1, C, T_in - ctx_before - ctx_after) = "
              "samples ctx_before .. T_in - ctx_after - 1; zero-pad (mean) outside the recording; "
              "C = len(positions) only",
    })
    if positions is not None:
        pos = np.asarray(positions, np.float64)
        p["positions"] = pos.round(3).tolist()
        p["neighbours"] = neighbours(pos, int(p["k"])).tolist()
        p["n_channels"] = int(pos.shape[0])
    return p


class SiteEphys(nn.Module):
    """See the module docstring. `nbr`: (C, K) neighbour indices, -1 = none."""

    def __init__(self, pre: int, post: int, omission: int, nbr, own_filters: int = 8, nb_filters: int = 2,
                 nb_before: int = 4, nb_after: int = 4, width: int = 12, depth: int = 1, posterior: bool = False,
                 keep_noise: float = 0.0, tile: int = TILE):
        super().__init__()
        self.tile = int(tile)
        self.posterior = bool(posterior)
        if not 0.0 <= keep_noise <= 1.0:
            raise ValueError(f"keep_noise must be in 0..1, got {keep_noise}")
        self.keep_noise = float(keep_noise)
        nbr = torch.as_tensor(np.asarray(nbr, np.int64))
        C, K = nbr.shape
        self.C, self.K = int(C), int(K)
        self.before, self.after = context(pre, post, omission, max(nb_before, 0))
        self.own_lo = self.before - pre - omission  # first own tap, relative to the input's first sample
        own_span = pre + omission + 1 + self.after
        self.own = nn.Conv2d(1, own_filters, (1, own_span))
        mask = torch.ones(1, 1, 1, own_span)
        mask[..., pre:pre + 2 * omission + 1] = 0.0  # site c's samples t - omission .. t + omission
        self.register_buffer("mask", mask, persistent=False)
        self.nb_lo = self.before - nb_before
        self.nb_hi = self.after - nb_after  # samples of the input's end the neighbour branch does not read
        self.nb = nn.Conv2d(1, nb_filters, (1, nb_before + nb_after + 1))
        # gather order: slot-major (K, C), -1 -> the appended zero site C
        idx = torch.where(nbr < 0, torch.full_like(nbr, C), nbr).T.reshape(-1)
        self.register_buffer("idx", idx, persistent=False)
        cin = own_filters + K * nb_filters
        layers = []
        for _ in range(max(1, depth)):
            layers.append(nn.Conv2d(cin, width, 1))
            cin = width
        self.mlp = nn.ModuleList(layers)
        self.head = nn.Conv2d(cin, 2 if self.posterior else 1, 1)
        if self.posterior:  # per-site noise variance (normalised units), learned with the prior
            self.log_noise = nn.Parameter(torch.zeros(self.C))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, C, T_in) -> (B, 1, C, T_out): the blind prediction, or with `posterior` the posterior mean."""
        return self._tiled(x, self._output)

    def prior(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, C, T_in) -> the blind head (B, 1 or 2, C, T_out): mean (and log variance) of each
        sample given everything but the site's own hidden band; never reads x[site, t - omission .. t + omission]."""
        return self._tiled(x, self._blind)

    def nll(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Training loss of a `posterior` model: the Gaussian negative log-likelihood of the hidden
        samples y (B, 1, C, T_out) under N(mean, prior variance + noise variance) (Laine et al. 2019)."""
        h = self.prior(x)
        mu, logv = h[:, :1], h[:, 1:].clamp(-12.0, 12.0)
        tot = logv.exp() + self.log_noise.clamp(-12.0, 12.0).exp()[:, None]
        return torch.mean((y - mu) ** 2 / tot + tot.log())

    def _tiled(self, x: torch.Tensor, fn) -> torch.Tensor:
        if x.shape[-2] != self.C:
            raise ValueError(f"this site-ephys model was made for {self.C} channels (its probe geometry), got {x.shape[-2]}")
        T_out = x.shape[-1] - self.before - self.after
        if T_out <= self.tile or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return fn(x)
        ctx = self.before + self.after  # 'valid' convolutions: tiles overlapping by the context are exact
        return torch.cat([fn(x[..., a:min(T_out, a + self.tile) + ctx]) for a in range(0, T_out, self.tile)], dim=-1)

    def _output(self, x: torch.Tensor) -> torch.Tensor:
        h = self._blind(x)
        xc = x[..., self.before:x.shape[-1] - self.after]
        if self.posterior:
            # Bayes: prior N(mu, v) from the blind head, observation x_c(t) = s + N(0, noise): posterior mean
            mu, v = h[:, :1], h[:, 1:].clamp(-12.0, 12.0).exp()
            noise = self.log_noise.clamp(-12.0, 12.0).exp()[:, None]
            h = (mu * noise + xc * v) / (v + noise)
        if self.keep_noise:  # give back this fraction of what was removed (sorters expect some noise)
            h = h + self.keep_noise * (xc - h)
        return h

    def _blind(self, x: torch.Tensor) -> torch.Tensor:
        T_in = x.shape[-1]
        xo = x[..., self.own_lo:]
        own = F.conv2d(xo, self.own.weight * self.mask, self.own.bias)  # (B, F1, C, T_out)
        xn = x[..., self.nb_lo:T_in - self.nb_hi]
        nb = self.nb(xn)  # (B, F2, C, T_out)
        B, F2, _, T = nb.shape
        nb = F.pad(nb, (0, 0, 0, 1))  # the zero site C, read by missing neighbours
        g = nb.index_select(2, self.idx).reshape(B, F2 * self.K, self.C, T)  # (F2, K) x C
        first = self.mlp[0]
        # first layer over [own, g] without concatenating them (a concatenated copy was slower in both engines);
        # f1 is a constant, not own.shape[1], so that the export folds the weight slices into initializers
        # (onnxruntime then runs both convolutions in its blocked layout: 1.1x the speed)
        f1 = self.own.out_channels
        h = F.conv2d(own, first.weight[:, :f1], first.bias) + F.conv2d(g, first.weight[:, f1:])
        h = F.relu_(h)
        for conv in self.mlp[1:]:
            h = F.relu_(conv(h))
        return self.head(h)


def _nbr(card) -> np.ndarray:
    p = card.params
    if "neighbours" not in p:
        raise ValueError("a site-ephys card needs the probe geometry (params['positions'] / ['neighbours'])")
    return np.asarray(p["neighbours"], np.int64)


def build(card) -> nn.Module:
    p = card.params
    return SiteEphys(card.pre, card.post, card.omission, _nbr(card), int(p["own_filters"]), int(p["nb_filters"]),
                     int(p["nb_before"]), int(p["nb_after"]), int(p["width"]), int(p.get("depth", 1)),
                     bool(p.get("posterior", False)), float(p.get("keep_noise", 0.0)))


def min_frames(card) -> int:
    """One whole window: ctx_before samples, the sample itself, ctx_after samples."""
    return int(card.params["ctx_before"]) + int(card.params["ctx_after"]) + 1


def training_span(card, batch: int, crop: int) -> int:
    """Samples per in-memory training chunk."""
    return max(min_frames(card) + crop, 60000)


def training_batch(card, data: np.ndarray, batch: int, crop: int, channels_per_crop: int, rng: np.random.Generator):
    """Random crops of `crop` output samples (plus context) over ALL channels (the geometry is the
    whole probe's): input (B, 1, C, T_in), target (B, 1, C, crop); no mask."""
    n, C = data.shape
    before, after = int(card.params["ctx_before"]), int(card.params["ctx_after"])
    t_in = before + crop + after
    xs = []
    for _ in range(batch):
        a = int(rng.integers(0, n - t_in + 1))
        xs.append(data[a:a + t_in].T)
    x = np.ascontiguousarray(np.stack(xs)[:, None])
    y = np.ascontiguousarray(x[..., before:before + crop])
    return torch.from_numpy(x), torch.from_numpy(y), None


def example_input(card, frame_shape=None, samples: int = 1024) -> torch.Tensor:
    """(1, 1, C, T_in) for ONNX export; C is the card's (its geometry's) channel count."""
    before, after = int(card.params["ctx_before"]), int(card.params["ctx_after"])
    c = int(card.params.get("n_channels", len(card.params.get("positions", [])) or 384))
    t_in = int(frame_shape[1]) if frame_shape is not None and len(frame_shape) > 1 else before + samples + after
    return torch.zeros(1, 1, c, max(t_in, before + after + 64))


def dynamic_axes() -> dict:
    return {"input": {0: "batch", 3: "samples_in"}, "output": {0: "batch", 3: "samples_out"}}


def make_card(n_channels: int, pre: int = 30, post: int = 30, omission: int = 1, preset: str = "fast",
              norm_mean: float = 0.0, norm_std: float = 1.0, training: dict | None = None, layout: str = "block",
              positions=None):
    """A card for `n_channels` sites at `positions` ((C, 2) µm, channel order); ValueError without them."""
    from livedenoise.models.card import ModelCard

    if positions is None:
        raise ValueError("site-ephys needs the probe geometry (site positions) of the recording")
    if len(positions) != int(n_channels):
        raise ValueError(f"{len(positions)} site positions for {n_channels} channels")
    params = preset_params(preset, pre, post, omission, positions)
    spec = window(pre, post, omission)
    return ModelCard(
        arch=ARCH.name, params=params, modality="ephys", pre=pre, post=post, omission=omission,
        offsets=list(spec.offsets), layout="block", frame_shape=None,
        norm_mean=float(norm_mean), norm_std=float(norm_std), training=training or {},
    )
