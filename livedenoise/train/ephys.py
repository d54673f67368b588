"""Self-supervised training of the ephys models on a user's own recording.

L2 (or, with `loss="l1"`, L1) loss between the prediction and the hidden input sample(s); one global
mean / std per recording, stored in the model card. No clean data needed.

Training pairs are the architecture's (its module's ``training_batch``, asked
through the registry):

- interp-ephys: random samples t with a full window; input (B, pre+post, rows, 2),
  target sample t in the same layout; loss on occupied sites only.
- block-ephys: random crops of `crop` output samples (plus context) over a random
  run of up to `channels_per_crop` neighbouring channels; loss on every output.

A recording shorter than `registry.min_frames(card)` samples (one whole window)
is refused with `registry.check_length`'s message, as `denoise` refuses it.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from livedenoise.errors import UserError
from livedenoise.models import registry
from livedenoise.models.checkpoint import save_checkpoint
from livedenoise.models.registry import build_network


def ephys_archs() -> list[str]:
    """Architectures this module trains (`registry.names(trainer="ephys")`)."""
    return registry.names(trainer="ephys")


def recording_stats(rec, max_samples: int = 300_000, seed: int = 0) -> tuple[float, float]:
    """Global mean / std (µV) from up to `max_samples` samples spread over the recording."""
    rng = np.random.default_rng(seed)
    n = rec.n_samples
    piece = min(n, 3000)
    k = max(1, min(max_samples // max(piece, 1), n // max(piece, 1)))
    starts = np.sort(rng.integers(0, max(1, n - piece + 1), size=k))
    vals = np.concatenate([rec.read(s, s + piece).ravel() for s in starts])
    std = float(vals.std())
    return float(vals.mean()), (std if std > 0 else 1.0)


def needs_geometry(arch: str) -> bool:
    """True for architectures whose card holds the probe's site positions (module constant GEOMETRY)."""
    return bool(getattr(registry.arch_module(arch), "GEOMETRY", False))


def default_arch(rec, probe=None) -> tuple[str, str | None]:
    """(architecture, note) that `train` picks for `rec` when none is named: the registry's default
    ephys architecture, unless it needs the probe geometry and neither `probe` nor the recording's
    metadata gives it; then the next one that does not, and a note saying so (never silently)."""
    names = ephys_archs()  # the registry's order: the default first
    first = names[0]
    for name in names:
        if not needs_geometry(name) or probe is not None:
            break
        from livedenoise.io.probe_geometry import site_positions

        if site_positions(rec)[0] is not None:
            break
    if name == first:
        return name, None
    return name, (f"{rec.path} carries no probe geometry, so this is {name}, not {first} (the default: it reads "
                  f"neighbouring sites and keeps spikes better for sorting); pass --probe FILE or --arch {name}")


def make_card(arch: str, n_channels: int, pre: int, post: int, omission: int, preset: str | None, layout: str | None,
              mean: float, std: float, training: dict, positions=None):
    """The card of an ephys architecture; None preset / layout take the architecture's defaults.
    `positions` ((C, 2) µm) go to architectures that need the geometry (`needs_geometry`)."""
    if arch not in ephys_archs():
        raise UserError(f"architecture {arch!r} is not an ephys model; choose one of {', '.join(ephys_archs())}")
    extra = {"layout": layout} if layout is not None else {}
    if needs_geometry(arch):
        extra["positions"] = positions
    try:
        return registry.make_card(arch, n_channels=n_channels, pre=pre, post=post, omission=omission, preset=preset,
                                  norm_mean=mean, norm_std=std, training=training, **extra)
    except ValueError as exc:
        raise UserError(str(exc)) from None


class _Chunks:
    """Random in-memory chunks of normalised data, refreshed every few steps (keeps I/O low)."""

    def __init__(self, rec, mean: float, std: float, length: int, rng: np.random.Generator, lo: int = 0, hi: int | None = None):
        self.rec, self.mean, self.std, self.rng = rec, mean, std, rng
        self.lo, self.hi = lo, rec.n_samples if hi is None else hi
        self.length = min(length, self.hi - self.lo)
        self.data = None

    def refresh(self) -> np.ndarray:
        a = int(self.rng.integers(self.lo, self.hi - self.length + 1))
        self.data = (self.rec.read(a, a + self.length) - np.float32(self.mean)) * np.float32(1.0 / self.std)
        return self.data


def train_ephys(
    rec,
    arch: str | None = None,
    out: str | os.PathLike = "ephys_model.pt",
    pre: int = 30,
    post: int = 30,
    omission: int = 1,
    preset: str | None = None,
    layout: str | None = None,
    steps: int = 2000,
    batch: int | None = None,
    lr: float = 1e-3,
    crop: int = 512,
    channels_per_crop: int = 64,
    seed: int = 0,
    device: str = "cpu",
    val_fraction: float = 0.1,
    log=None,
    log_every: int = 50,
    time_limit: float | None = None,
    init: str | os.PathLike | None = None,
    probe: str | os.PathLike | None = None,
    positions=None,
    loss: str | None = None,
    keep_noise: float | None = None,
):
    """Train and save a checkpoint; returns (card, history dict). `arch` None: `default_arch(rec)`
    (the registry's default ephys architecture when the recording allows it). `init`: a checkpoint of the same
    architecture and channel count to start from (its window may differ where models/retarget.py can move it).
    Architectures that need the probe geometry
    (site-ephys) take `positions` ((C, 2) µm) when given, else read them from `probe` (a
    probeinterface file) or the recording's metadata (`io.probe_geometry`); UserError when none.
    `loss`: `l2` (the conditional mean: the least squared error, but it shrinks events the
    model is unsure of) or `l1` (the conditional median: keeps more of a spike's amplitude);
    None: the architecture's default. `keep_noise` (site-ephys): the fraction of the removed
    noise the output gives back (card `params["keep_noise"]`; None: the preset's)."""
    if isinstance(rec, (str, os.PathLike)):
        from livedenoise.io.readers_ephys import open_recording

        rec = open_recording(rec)
    note = None
    if arch is None:
        arch, note = default_arch(rec, probe if positions is None else positions)
    neural = rec.meta.get("neural_channels") if rec.format == "spikeglx" else None
    if neural is not None and 0 < len(neural) < rec.n_channels and list(neural) == list(range(len(neural))):
        import dataclasses

        k = len(neural)  # train on the probe's sites only, not the SpikeGLX sync channel
        rec = dataclasses.replace(rec, data=rec.data[:, :k], bit_volts=rec.bit_volts[:k], channel_names=rec.channel_names[:k])
    if log is None:
        def log(msg):
            print(msg, file=sys.stderr, flush=True)
    if note:
        log(f"note: {note}")
    loss_name = loss or str(registry.defaults(arch).get("loss", "l2"))
    if loss_name not in ("l1", "l2", "nll"):
        raise UserError(f"ephys training takes --loss l1, l2 or nll (got {loss_name!r})")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    mean, std = recording_stats(rec, seed=seed)
    training = {
        "source": str(rec.path), "format": rec.format, "stream": rec.stream_name, "n_channels": rec.n_channels,
        "n_samples": rec.n_samples, "sample_rate": rec.sample_rate, "steps": steps, "lr": lr, "loss": loss_name, "seed": seed,
    }
    if needs_geometry(arch) and positions is None:
        from livedenoise.io.probe_geometry import require_positions

        positions = require_positions(rec, probe, rec.n_channels, what=f"--arch {arch}")
    card = make_card(arch, rec.n_channels, pre, post, omission, preset, layout, mean, std, training, positions)
    if keep_noise is not None:
        if "keep_noise" not in card.params:
            raise UserError(f"--keep-noise applies to models that give back part of the noise (site-ephys), not {arch}")
        if not 0.0 <= keep_noise <= 1.0:
            raise UserError(f"--keep-noise must be in 0..1 (got {keep_noise})")
        card.params["keep_noise"] = float(keep_noise)
    n = rec.n_samples
    registry.check_length(card, n, str(rec.path))
    net = build_network(card)
    if init is not None:
        from livedenoise.models.checkpoint import read_checkpoint
        from livedenoise.models.retarget import retarget

        init_card, state = read_checkpoint(init)
        if init_card.arch != card.arch or init_card.params.get("n_channels") != card.params.get("n_channels"):
            raise UserError(f"--init {init} is {init_card.arch} for {init_card.params.get('n_channels')} channels; it cannot "
                            f"start a {card.arch} model for {card.params.get('n_channels')} channels")
        try:
            state, how = retarget(init_card, card, state)
        except ValueError as exc:
            raise UserError(f"--init {init}: {exc}") from None
        card.params = dict(init_card.params)
        card.origin = init_card.origin
        net = build_network(card)
        net.load_state_dict(state)
        card.training["init"] = str(init) if how == "same window" else f"{init} ({how})"
        log(f"--init {init}: {how}")
    net = net.to(device)
    # a model whose output is a posterior (site-ephys): trained on its blind head, by likelihood
    posterior = bool(getattr(net, "posterior", False))
    what = f"{arch} {card.params.get('preset', '')}".strip()
    if posterior and loss not in (None, "nll"):
        raise UserError(f"{what} outputs a posterior and trains by likelihood (--loss nll), not {loss}")
    if not posterior and loss_name == "nll":
        if loss is not None:
            raise UserError(f"--loss nll trains models with a posterior output (site-ephys fast, base), not {what}")
        loss_name = "l2"
    card.training["loss"] = loss_name
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
    before = card.pre + card.omission
    after = card.lag
    need = registry.min_frames(card)  # one whole window
    n_val = int(n * val_fraction) if n * val_fraction >= need * 4 else 0
    train_hi = n - n_val
    batch = batch or int(registry.defaults(arch)["batch"])
    crop = max(1, min(crop, train_hi - before - after))
    length = registry.training_span(card, batch, crop)
    chunks = _Chunks(rec, mean, std, length, rng, 0, train_hi)
    hist: dict = {"loss": [], "val_loss": None}
    t0 = time.perf_counter()
    net.train()
    done = 0
    for step in range(steps):
        if step % 25 == 0:
            data = chunks.refresh()
        x, y, m = registry.training_batch(card, data, batch, crop, channels_per_crop, rng)
        x, y = x.to(device), y.to(device)
        if posterior:
            loss = net.nll(x, y)
        else:
            pred = net(x)
            err = (pred - y).abs() if loss_name == "l1" else (pred - y) ** 2
            if m is not None:
                m = m.to(device)
                loss = (err * m).sum() / (m.sum() * pred.shape[0])
            else:
                loss = torch.mean(err)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        lv = float(loss.detach())
        hist["loss"].append(lv)
        done = step + 1
        if log_every and (step % log_every == 0 or step == steps - 1):
            log(f"step {step + 1}/{steps} loss {lv:.4f} ({time.perf_counter() - t0:.0f} s)")
        if time_limit and time.perf_counter() - t0 > time_limit:
            log(f"time limit reached after {step + 1} steps")
            break
    net.eval()
    if n_val:
        vchunks = _Chunks(rec, mean, std, min(n_val, length), np.random.default_rng(seed + 1), train_hi, n)
        vdata = vchunks.refresh()
        with torch.no_grad():
            losses = []
            for _ in range(4):
                x, y, m = registry.training_batch(card, vdata, batch, crop, channels_per_crop, rng)
                pred = net.prior(x)[:, :1] if posterior else net(x)  # the blind prediction: its L2 is comparable
                if m is not None:
                    losses.append(float(((pred - y) ** 2 * m).sum() / (m.sum() * pred.shape[0])))
                else:
                    losses.append(float(torch.mean((pred - y) ** 2)))
        hist["val_loss"] = float(np.mean(losses))
        log(f"validation loss {hist['val_loss']:.4f} (1.0 = predicting the mean)")
    card.training.update({"steps_done": done, "final_loss": float(np.mean(hist["loss"][-20:])) if hist["loss"] else None,
                          "val_loss": hist["val_loss"], "train_seconds": round(time.perf_counter() - t0, 1)})
    net = net.cpu()
    save_checkpoint(Path(out), card, net.state_dict())  # the command says where (one line)
    return card, hist
