"""Self-supervised training (no clean data) of the imaging architectures
(`registry.names(trainer="imaging")`: interp2d, cad3d).

`train(movies, cfg)` returns (card, state_dict, history); the caller saves the
checkpoint. The card carries the window, the normalisation (global mean/std of
the training movies, estimated from a sample of frames) and a training summary.

- Training pairs are the architecture's (`train/samples.py`): the window around
  t with target frame t (interp2d, DeepInterpolation), or odd/even sub-stacks
  with the loss on every temporal position (cad3d, DeepCAD).
- A movie shorter than `registry.min_frames(card)` is refused with
  `registry.check_length`'s message, the rule `denoise` and `serve` apply.
- Random square crops with flips/rot90; a held-out validation block (the last
  `val_fraction` of each movie, or separate `val_movies`) with its own loss;
  the best state by validation loss is returned.
- Budgets: `steps` and/or `max_minutes` (whichever ends first). The learning
  rate follows a cosine from `lr` down to lr/10 over the budget.
- Repeatable: the same seed and the same `steps` (no time budget) give
  identical weights on CPU.
- Several GPUs (or CPU processes) with torchrun: WORLD_SIZE / LOCAL_RANK are
  detected, DistributedDataParallel wraps the network (nccl on CUDA, gloo on
  CPU), each rank draws its own samples, rank 0 validates and returns the
  state (other ranks return it too, but only rank 0 should save).
"""

from __future__ import annotations

import copy
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from livedenoise.models import registry
from livedenoise.models.card import ModelCard
from livedenoise.models.registry import build_network
from livedenoise.models.retarget import retarget
from livedenoise.train.samples import MovieSource, SampleMaker, sample_norm

LOSSES = ("l1", "l2", "mixed")
DEFAULT_STEPS = 2000
TRAINED_DEFAULTS = ("preset", "pre", "post", "omission", "loss", "crop", "batch", "lr")
"""TrainConfig fields that default (when None) to the architecture's declared defaults (`registry.defaults`)."""


def trainable() -> list[str]:
    """Architectures this module trains."""
    return registry.names(trainer="imaging")


@dataclass
class TrainConfig:
    arch: str | None = None
    """A registered imaging architecture; None: the default (`registry.default_name("2p")`, interp2d)."""
    preset: str | None = None
    pre: int | None = None
    """Window: frames before the predicted one; None: the architecture's default (8 for interp2d, 2 for fmri-blind)."""
    post: int | None = None
    omission: int | None = None
    loss: str | None = None
    """l1, l2 or mixed (0.5 L1 + 0.5 L2); default: the architecture's (l2 for interp2d, mixed for cad3d)."""
    crop: int | None = None
    batch: int | None = None
    lr: float | None = None
    steps: int | None = None
    max_minutes: float | None = None
    val_fraction: float = 0.1
    val_every: int = 50
    val_samples: int = 32
    norm_frames: int = 256
    init: str | None = None
    """Path of a checkpoint to fine-tune (same arch and window)."""
    seed: int = 0
    device: str = "auto"
    modality: str = "2p"
    progress: bool = True
    tune_innovation: bool = True
    """After training, tune the innovation step (models/innovation.py) on up to 100 validation frames."""
    sources: list[str] = field(default_factory=list)
    """Names of the training movies, recorded in the card."""

    def resolved(self) -> "TrainConfig":
        out = copy.copy(self)
        if out.arch is None:
            out.arch = registry.default_name("2p")
        if out.arch not in trainable():
            raise ValueError(f"architecture {out.arch!r} is not trainable here; choose one of {', '.join(trainable())}")
        d = registry.defaults(out.arch, out.preset)
        for k in TRAINED_DEFAULTS:
            if getattr(out, k) is None:
                setattr(out, k, d[k])
        if out.loss not in LOSSES:
            raise ValueError(f"unknown loss {out.loss!r}; choose one of {', '.join(LOSSES)}")
        if out.steps is None and out.max_minutes is None:
            out.steps = DEFAULT_STEPS
        if out.steps is not None and out.steps < 1:
            raise ValueError("steps must be >= 1")
        if out.max_minutes is not None and not out.max_minutes > 0:
            raise ValueError("max_minutes must be > 0")
        if not 0 <= out.val_fraction < 1:
            raise ValueError("val_fraction must be in [0, 1)")
        if out.crop < 8 or out.batch < 1 or not out.lr > 0:
            raise ValueError("need crop >= 8, batch >= 1 and lr > 0")
        return out


def loss_fn(name: str):
    """The training loss: l1, l2 or mixed, over the finite targets only.

    Non-finite target pixels (NaN borders of motion-corrected movies, Inf
    patches) are left out of the loss; inputs were filled by `SampleMaker`.
    """
    if name == "l1":
        base = F.l1_loss
    elif name == "l2":
        base = F.mse_loss
    else:
        def base(a, b):
            return 0.5 * F.l1_loss(a, b) + 0.5 * F.mse_loss(a, b)

    def masked(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        finite = torch.isfinite(b)
        if bool(finite.all()):
            return base(a, b)
        if not bool(finite.any()):
            return (a * 0.0).sum()  # nothing to learn from: zero loss, zero gradient
        return base(a[finite], b[finite])

    return masked


def make_card(cfg: TrainConfig, mean: float = 0.0, std: float = 1.0) -> ModelCard:
    if cfg.preset is None or cfg.arch is None:
        cfg = cfg.resolved()
    return registry.make_card(cfg.arch, preset=cfg.preset, pre=cfg.pre, post=cfg.post, omission=cfg.omission,
                              modality=cfg.modality, norm_mean=mean, norm_std=std)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("CUDA was requested but torch sees no GPU (use --device cpu)")
    return torch.device(name)


def _as_movie(m) -> Any:
    return m if hasattr(m, "shape") else np.asarray(m)


def split_sources(movies: Sequence, val_movies: Sequence | None, val_fraction: float, card: ModelCard,
                  names: Sequence[str] | None = None):
    """Training and validation MovieSources: the last val_fraction of each movie, or separate movies.

    Every movie must have `registry.min_frames(card)` frames (UserError otherwise),
    and so must a held-out validation block (else the movie is not split).
    """
    need = registry.min_frames(card)
    train_src, val_src = [], []
    names = list(names or [f"movie {i}" for i in range(len(movies))])
    for m, name in zip(movies, names):
        m = _as_movie(m)
        n = int(m.shape[0])
        registry.check_length(card, n, name)
        n_val = 0 if (val_movies or val_fraction == 0) else max(int(round(n * val_fraction)), need)
        if n - n_val < need:
            n_val = 0  # too short to split: train on everything, no validation block
        train_src.append(MovieSource(m, 0, n - n_val, name))
        if n_val:
            val_src.append(MovieSource(m, n - n_val, n, f"{name} (validation block)"))
    for i, m in enumerate(val_movies or []):
        m = _as_movie(m)
        registry.check_length(card, int(m.shape[0]), f"validation movie {i}")
        val_src.append(MovieSource(m, name=f"validation movie {i}"))
    return train_src, val_src


class _Dist:
    def __init__(self, device_name: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.active = self.world > 1
        self.owns_group = False
        if device_name == "auto":
            device_name = "cuda" if torch.cuda.is_available() else "cpu"
        if self.active and device_name.startswith("cuda") and ":" not in device_name:
            device_name = f"cuda:{self.local_rank}"
        self.device = pick_device(device_name)
        if self.active:
            import torch.distributed as dist

            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            if not dist.is_initialized():
                dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
                self.owns_group = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def any_stop(self, stop: bool) -> bool:
        if not self.active:
            return stop
        import torch.distributed as dist

        flag = torch.tensor([1.0 if stop else 0.0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item() > 0)

    def close(self) -> None:
        """Leave the process group together: every rank waits for the others first.

        Destroying a gloo group while a peer is still working on it can abort the
        process ("terminate called without an active exception"), so the ranks meet
        at a barrier (rank 0 validates and tunes after the last step) before leaving.
        """
        if self.owns_group:
            import torch.distributed as dist

            try:
                dist.barrier()
            finally:
                dist.destroy_process_group()


def _to_tensor(a: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).to(device)


def _evaluate(net, val: tuple[torch.Tensor, torch.Tensor], lossf, chunk: int = 8) -> float:
    """Mean validation loss; `net` in training-output mode returns predictions shaped like the targets."""
    net.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        xs, ys = val
        for a in range(0, xs.shape[0], chunk):
            x, y = xs[a : a + chunk], ys[a : a + chunk]
            total += float(lossf(net(x), y)) * x.shape[0]
            n += x.shape[0]
    net.train()
    return total / max(n, 1)


def held_out_frames(card: ModelCard, src: MovieSource, max_frames: int = 300, max_side: int = 256) -> np.ndarray:
    """The first `max_frames` frames of `src` (a centre crop of at most `max_side` along each axis),
    float32 (T, h, w), or (T, i, j, k) for volumes."""
    n = min(len(src), max_frames)
    fs = tuple(src.frame_shape)
    sides = fs if card.frame_shape is not None else tuple(min(s, max_side) for s in fs)
    box = tuple(slice((s - c) // 2, (s - c) // 2 + c) for s, c in zip(fs, sides))
    return np.ascontiguousarray(src.frames(range(n))[(slice(None), *box)], dtype=np.float32)


def predict(net, card: ModelCard, raw: np.ndarray, device: torch.device) -> np.ndarray:
    """The model's prediction of every frame of `raw` (T, H, W), exactly as `livedenoise denoise` makes it
    (same windows, edges and normalisation; no innovation step)."""
    from livedenoise.export.engines.torch import TorchEngine
    from livedenoise.stream.offline import denoise_array

    was_training = net.training
    engine = TorchEngine(card, net, str(device))  # puts net in eval mode, on `device`
    pred = denoise_array(engine, raw)
    net.train(was_training)
    return pred


def tune_innovation(net, card: ModelCard, src: MovieSource, device: torch.device,
                    max_frames: int = 100, max_side: int = 256, raw: np.ndarray | None = None,
                    pred: np.ndarray | None = None) -> dict | None:
    """Self-supervised innovation settings for `net` on (a centre crop of) the first frames of `src`.

    The frames are denoised exactly as `livedenoise denoise` would (same windows and
    edges); `raw`/`pred` (T, H, W) given by the caller are used instead. Returns the
    card entry ({sigma_xy, k, loss_prediction, loss_best, frames, crop, noise_passed: the fraction of
    the noise variance the step lets through, `models.innovation.noise_passed`}) or None when
    the step does not apply to this model or does not lower the loss.
    """
    from livedenoise.models.innovation import applies_to, noise_passed, tune

    if raw is None:
        if len(src) < registry.min_frames(card):  # the one length rule
            return None
        raw = held_out_frames(card, src, max_frames, max_side)
    raw, pred = raw[:max_frames], None if pred is None else pred[:max_frames]
    if applies_to(card) is not None or len(raw) < registry.min_frames(card):
        return None
    if pred is None:
        pred = predict(net, card, raw, device)
    cfg, report = tune(pred, raw)
    if cfg is None:
        return None
    return {**cfg.to_dict(), "loss_prediction": report["loss_prediction"], "loss_best": report["loss_best"],
            "frames": len(raw), "crop": list(raw.shape[1:]),
            "noise_passed": noise_passed(raw, cfg) if len(raw) >= 3 else None}


def _select_and_report(net, card: ModelCard, candidates: dict[str, dict], src: MovieSource, held_out: bool,
                       device: torch.device) -> tuple[str, dict, np.ndarray, np.ndarray]:
    """Pick the candidate weights with the lowest held-out loss on whole frames; report its quality.

    candidates: name -> state_dict. Returns (chosen name, card entry, raw, prediction)
    with the entry {"selected", "held_out_loss" per candidate, "quality"} (train/quality.py).
    """
    from livedenoise.train.quality import held_out_loss, quality_report

    raw = held_out_frames(card, src)
    past = max(0, -card.window.span[0])  # frames before t the model reads
    losses, preds = {}, {}
    for name, state in candidates.items():
        net.load_state_dict(state)
        preds[name] = predict(net, card, raw, device)
        losses[name] = held_out_loss(raw, preds[name], past, card.lag)
    chosen = min(losses, key=lambda k: losses[k])
    net.load_state_dict(candidates[chosen])
    h, w = raw.shape[1:3]
    side = 128  # the report's crop: enough pixels, seconds not minutes on a CPU
    y, x = (h - min(h, side)) // 2, (w - min(w, side)) // 2
    crop = (slice(None), slice(y, y + min(h, side)), slice(x, x + min(w, side)))
    try:
        if raw.ndim != 3:
            raise ValueError("the quality report scores 2D imaging movies; for fMRI runs see the simulator's "
                             "metrics (livedenoise.sim.fmri_metrics) and docs/benchmarks.md")
        quality = quality_report(raw[crop], preds[chosen][crop], past, card.lag)
        quality["held_out"] = held_out
        quality["source"] = src.name
    except ValueError as exc:
        quality = {"skipped": str(exc)}
    entry = {"selected": chosen, "held_out_loss": losses, "selection_frames": int(len(raw)), "quality": quality}
    return chosen, entry, raw, preds[chosen]


def train(movies: Sequence, cfg: TrainConfig, val_movies: Sequence | None = None, log=None):
    """Train a self-supervised denoiser; returns (card, state_dict, history).

    `movies` are array-likes of shape (frames, H, W) (numpy arrays, memmaps, or
    the readers' lazy movies). `log` (a callable taking a string) receives one
    line per validation when the progress bar is off.
    """
    cfg = cfg.resolved()
    dist = _Dist(cfg.device)
    device = dist.device
    try:
        return _train(movies, cfg, val_movies, dist, device, log)
    finally:
        dist.close()


def _say(log, line: str) -> None:
    """One status line: to `log` when given, else to stderr."""
    if log is not None:
        log(line)
    else:
        print(line, file=sys.stderr, flush=True)


def _after_training(net, card: ModelCard, cfg: TrainConfig, val_src, train_src, final_state: dict, best_state: dict,
                    best_step: int, step: int, device: torch.device, log):
    """Rank 0 after the last step: select the weights, report their quality, tune the innovation step.

    Returns (selection entry or None, innovation tuning or None, chosen state, its step).
    """
    tuned = None
    selection = None
    # the held-out loss on whole frames picks between the best-on-crops and the final weights
    # (a few validation crops are too few to select a checkpoint), then scores the choice
    usable = [s for s in val_src if len(s) >= registry.min_frames(card)]
    held_out = bool(usable)
    usable = usable or [s for s in train_src if len(s) >= registry.min_frames(card)]
    candidates = {"final": final_state}
    if best_step != step:
        candidates["best_validation"] = best_state
    if usable and step:
        chosen, selection, raw, pred = _select_and_report(net, card, candidates, usable[0], held_out, device)
        best_state = candidates[chosen]
        if chosen == "final":
            best_step = step
        if cfg.tune_innovation:
            tuned = tune_innovation(net, card, usable[0], device, raw=raw, pred=pred)
    else:
        net.load_state_dict(best_state)
        if cfg.tune_innovation and usable:
            tuned = tune_innovation(net, card, usable[0], device)
    return selection, tuned, best_state, best_step


def _train(movies, cfg: TrainConfig, val_movies, dist: _Dist, device: torch.device, log):
    from livedenoise.models.checkpoint import read_checkpoint

    t_start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    card = make_card(cfg)
    names = cfg.sources or None
    train_src, val_src = split_sources(movies, val_movies, cfg.val_fraction, card, names)
    mean, std = sample_norm(train_src, cfg.norm_frames)
    card.norm_mean, card.norm_std = mean, std

    net = build_network(card)
    init_info = None
    if cfg.init:
        init_card, state = read_checkpoint(cfg.init)
        if init_card.arch != card.arch:
            raise ValueError(f"--init {cfg.init} is {init_card.arch}; it cannot start a {card.arch} model")
        card.params = dict(init_card.params)
        try:
            state, how = retarget(init_card, card, state)
        except ValueError as exc:
            raise ValueError(f"--init {cfg.init}: {exc}") from None
        card.origin = init_card.origin  # an imported model stays traceable through fine-tuning
        net = build_network(card)
        net.load_state_dict(state)
        init_info = str(cfg.init)
        if how != "same window":
            init_info = f"{cfg.init} (window {init_card.offsets} -> {card.offsets}: {how})"
            if log is not None:
                log(f"--init: {how}")
    net.to(device).train()

    rng = np.random.default_rng([cfg.seed, dist.rank])
    maker = SampleMaker(card, train_src, cfg.crop, rng)
    val_maker = SampleMaker(card, val_src, cfg.crop, np.random.default_rng(0), augment=False) if val_src else None
    val = None
    if val_maker is not None and dist.main:
        vx, vy = val_maker.fixed(cfg.val_samples, seed=cfg.seed + 12345)
        val = (_to_tensor(vx, device), _to_tensor(vy, device))

    model = net
    if dist.active:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    # multi-output pairs (cad3d): forward returns every position, shaped like the targets (through DDP too)
    registry.training_outputs(card, net, True)

    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    lossf = loss_fn(cfg.loss)
    max_s = cfg.max_minutes * 60.0 if cfg.max_minutes else None
    history: dict[str, Any] = {"step": [], "loss": [], "val_step": [], "val_loss": [], "samples_per_s": []}

    bar = None
    if cfg.progress and dist.main:
        from livedenoise.progress import Progress

        bar = Progress(cfg.steps, "step", f"train {card.arch}")

    best_state = copy.deepcopy(net.state_dict())
    best_val = math.inf
    best_step = 0
    step = 0
    running = None
    seen = 0
    t_loop = time.perf_counter()
    interrupted = False
    last_val = None

    def validate() -> None:
        """Validation loss now; keep the weights when it is the best so far."""
        nonlocal last_val, best_val, best_step, best_state
        last_val = _evaluate(net, val, lossf)
        history["val_step"].append(step)
        history["val_loss"].append(last_val)
        if last_val < best_val:
            best_val, best_step = last_val, step
            best_state = copy.deepcopy(net.state_dict())

    def progress() -> float:
        p = 0.0
        if cfg.steps:
            p = max(p, step / cfg.steps)
        if max_s:
            p = max(p, (time.perf_counter() - t_loop) / max_s)
        return min(p, 1.0)

    try:
        while True:
            stop = (cfg.steps is not None and step >= cfg.steps) or (max_s is not None and time.perf_counter() - t_loop >= max_s)
            if dist.any_stop(stop):
                break
            for g in opt.param_groups:
                g["lr"] = cfg.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress())))
            xb, yb = maker.batch(cfg.batch)
            x, y = _to_tensor(xb, device), _to_tensor(yb, device)
            loss = lossf(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            seen += cfg.batch * dist.world
            lv = float(loss.detach())
            if not math.isfinite(lv):
                raise ValueError(f"training loss became {lv} at step {step}: lower --lr, or check the movie "
                                 f"(its normalisation is mean {card.norm_mean:.4g}, std {card.norm_std:.4g})")
            running = lv if running is None else 0.95 * running + 0.05 * lv
            history["step"].append(step)
            history["loss"].append(lv)
            if dist.main and val is not None and (step % cfg.val_every == 0):
                validate()
            rate = seen / max(time.perf_counter() - t_loop, 1e-9)
            history["samples_per_s"].append(rate)
            if bar is not None:
                post = {"loss": f"{running:.4f}", "samples/s": f"{rate:.1f}"}
                if last_val is not None:
                    post["val"] = f"{last_val:.4f}"
                bar.set_postfix(post)
                bar.update(1)
            elif log and dist.main and step % cfg.val_every == 0:
                log(f"step {step} loss {running:.4f} val {last_val if last_val is not None else float('nan'):.4f} {rate:.1f} samples/s")
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if bar is not None:
            bar.close()

    if dist.main and val is not None and (not history["val_step"] or history["val_step"][-1] != step) and step:
        validate()
    final_state = copy.deepcopy(net.state_dict())
    if val is None:
        best_state, best_step = final_state, step
    registry.training_outputs(card, net, False)
    tuned = None
    selection = None
    skipped = None
    if interrupted and dist.main:
        _say(log, f"interrupted at step {step}: choosing the best weights and writing the checkpoint; "
                  "Ctrl-C again to skip the quality report and innovation tuning")
    try:
        if dist.main:
            selection, tuned, best_state, best_step = _after_training(
                net, card, cfg, val_src, train_src, final_state, best_state, best_step, step, device, log)
    except KeyboardInterrupt:
        skipped = "interrupted again: the quality report and innovation tuning were skipped"
        _say(log, f"{skipped}; writing the checkpoint")
        interrupted = True
    if tuned is not None:
        card.innovation = {"sigma_xy": tuned["sigma_xy"], "k": tuned["k"], "exclude": tuned.get("exclude", 0)}

    elapsed = time.perf_counter() - t_start
    history.update(best_step=best_step, best_val_loss=None if val is None else best_val, steps=step,
                   seconds=elapsed, interrupted=interrupted, world_size=dist.world, device=str(device))
    card.training = {
        "sources": [s.name for s in train_src],
        "frames": int(sum(len(s) for s in train_src)),
        "validation_frames": int(sum(len(s) for s in val_src)),
        "frame_shape": list(train_src[0].frame_shape),
        "loss": cfg.loss,
        "crop": int(maker.crop),
        "batch": cfg.batch,
        "lr": cfg.lr,
        "steps": step,
        "best_step": best_step,
        "best_val_loss": None if val is None else float(best_val),
        "seconds": round(elapsed, 1),
        "seed": cfg.seed,
        "device": str(device),
        "world_size": dist.world,
        "init": init_info,
        "innovation_tuning": tuned,
        "selection": selection,
        "interrupted": interrupted,
        "skipped": skipped,
    }
    state = {k: v.detach().cpu().clone() for k, v in best_state.items()}
    return card, state, history
