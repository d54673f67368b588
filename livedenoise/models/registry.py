"""The architecture registry: every fact about an architecture, asked in one place.

An architecture is one module in `livedenoise/models/nets/` that declares, at
module level:

- ``ARCH = Arch(name=..., modality=..., layout=..., presets=PRESETS, defaults={...}, trainer=...)``:
  its registered name, what data it reads, its presets and the defaults
  `train` uses (window ``pre``/``post``/``omission``, ``preset``, and the
  training settings ``loss``, ``crop``, ``batch``, ``lr``);
- ``preset_params(preset) -> dict`` (the card's ``params``),
  ``window(pre, post, omission) -> WindowSpec`` and ``build(card) -> nn.Module``.

and, only where it differs from the default, any of:

- ``min_frames(card)``: fewest frames a recording needs (default 2: the target
  plus one usable neighbour; the window's edge rule supplies the rest);
- ``make_card(...)``: how a card is made (ephys models: from a channel count);
- ``target_shift(card)`` / ``training_outputs(net, on)``: training pairs whose
  targets are every input frame shifted by k (DeepCAD's odd/even pairs; default:
  the target is the predicted frame itself, one output);
- ``training_batch(card, data, batch, crop, channels_per_crop, rng)`` /
  ``training_span(card, batch, crop)``: ephys training pairs;
- ``example_input(card, frame_shape)`` / ``dynamic_axes()``: ONNX export
  (default: ``(1, n_inputs, H, W)`` zeros, batch axis dynamic);
- ``spatial_extent(card)``: receptive field of filters with no network to ask.
- ``WINDOW_INPUT`` (the state-dict key whose dim 1 holds the window's offsets) or
  ``WINDOW_FREE = True`` (convolutional in time): `train --init` may change the window
  (models/retarget.py).

The registry finds architectures by scanning the modules of `models/nets`:
adding an architecture is adding one module, with no list to edit elsewhere.
Names, modalities and trainers are read from the source (`ast`) so that
building the command line does not import torch; everything else imports the
module. Every network maps a normalised window (B, C, *frame) to the
normalised prediction of the centre frame (B, 1, *frame) (`block-ephys`
documents its own block contract).
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import pkgutil
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Mapping

from livedenoise.errors import UserError

NETS_PACKAGE = "livedenoise.models.nets"
MODALITIES = ("2p", "ephys", "fmri")
"""What an architecture reads: `2p` frames (imaging), `ephys` samples, or `fmri` volumes (4D NIfTI runs)."""
TRAINERS = ("imaging", "ephys", "filter")
"""How `livedenoise train` makes a model: `imaging` (train/imaging.py), `ephys` (train/ephys.py),
`filter` (a fixed or grid-searched filter, written without training)."""
STATIC_FIELDS = ("name", "modality", "trainer", "default", "layout")
"""Fields the registry reads from source (they must be literals in ``Arch(...)``)."""


@dataclass(frozen=True, eq=False)
class Arch:
    """What an architecture module declares about itself (``ARCH = Arch(...)``)."""

    name: str
    """Registered name, stored in every model card (`card.arch`)."""
    modality: str
    """`2p` (frames), `ephys` (samples x channels) or `fmri` (volumes)."""
    trainer: str
    """`imaging`, `ephys` or `filter` (see TRAINERS)."""
    presets: Mapping[str, dict] = field(default_factory=dict)
    """Size presets: name -> architecture parameters."""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    """Defaults for `train`: pre, post, omission, preset, and loss/crop/batch/lr where they apply."""
    preset_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Training defaults that differ for one preset (e.g. a larger crop): preset -> {key: value}."""
    layout: str = "frames"
    """How one input frame is laid out: `frames` (H x W image), `volumes` (I x J x K fMRI volume), or the default
    ephys layout."""
    layouts: tuple[str, ...] = ()
    """Every layout the architecture accepts (default: just `layout`)."""
    default: bool = False
    """The architecture `train` picks for its modality when --arch is not given."""
    cpu_backend: str = "torch"
    """What `--backend auto` runs a .pt checkpoint on without a CUDA GPU: `torch`, or `onnxruntime` (exported on
    the fly, cached) where the architecture measured faster there (docs/benchmarks.md)."""
    tile: int | None = None
    """Block models (layout `block`): output samples per onnxruntime pass (`engines.base.block_tile`; site-ephys
    also tiles itself in PyTorch). Their layers are 'valid' convolutions along time, so passes over tiles whose
    inputs overlap by the context are exact; small tiles keep a pass's intermediates in the CPU's cache.
    None: one pass per block."""
    summary: str = ""
    """One line for listings."""

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"architecture {self.name!r}: modality must be one of {MODALITIES}, got {self.modality!r}")
        if self.trainer not in TRAINERS:
            raise ValueError(f"architecture {self.name!r}: trainer must be one of {TRAINERS}, got {self.trainer!r}")
        missing = [k for k in ("pre", "post", "omission", "preset") if k not in self.defaults]
        if missing:
            raise ValueError(f"architecture {self.name!r}: defaults lack {', '.join(missing)}")
        if self.defaults["preset"] not in self.presets:
            raise ValueError(f"architecture {self.name!r}: default preset {self.defaults['preset']!r} is not a preset")
        if self.tile is not None and (not isinstance(self.tile, int) or self.tile < 1):
            raise ValueError(f"architecture {self.name!r}: tile must be a positive number of samples, got {self.tile!r}")
        if self.cpu_backend not in ("torch", "onnxruntime"):
            raise ValueError(f"architecture {self.name!r}: cpu_backend must be torch or onnxruntime, got {self.cpu_backend!r}")
        if not self.layouts:
            object.__setattr__(self, "layouts", (self.layout,))

    @property
    def trainable(self) -> bool:
        """True for self-supervised networks (`train` optimises weights); False for fixed filters."""
        return self.trainer != "filter"


# --------------------------------------------------------------------------- discovery


def _literal_fields(path: str) -> dict | None:
    """The literal keyword arguments of ``ARCH = Arch(...)`` in a module's source, or None when absent."""
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == "ARCH" and isinstance(node.value, ast.Call)):
            out = {}
            for kw in node.value.keywords:
                if kw.arg in STATIC_FIELDS:
                    try:
                        out[kw.arg] = ast.literal_eval(kw.value)
                    except ValueError:
                        pass
            return out
    return None


@functools.lru_cache(maxsize=None)
def _declared() -> dict[str, dict]:
    """name -> {"module": ..., "modality": ..., "trainer": ..., "default": ..., "layout": ...} for every nets module."""
    pkg = importlib.import_module(NETS_PACKAGE)
    found: dict[str, dict] = {}
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        modname = f"{NETS_PACKAGE}.{info.name}"
        spec = importlib.util.find_spec(modname)
        origin = getattr(spec, "origin", None)
        facts = _literal_fields(origin) if origin and origin.endswith(".py") else None
        if facts is None and not (origin and origin.endswith(".py")):
            mod = importlib.import_module(modname)  # no source to read: ask the module
            arch = getattr(mod, "ARCH", None)
            facts = {k: getattr(arch, k) for k in STATIC_FIELDS} if isinstance(arch, Arch) else None
        if facts is None:
            continue  # a helper module, not an architecture
        if not all(k in facts for k in ("name", "modality", "trainer")):
            mod = importlib.import_module(modname)
            arch = mod.ARCH
            facts = {k: getattr(arch, k) for k in STATIC_FIELDS}
        name = facts["name"]
        if name in found:
            raise RuntimeError(f"architecture {name!r} is declared by both {found[name]['module']} and {modname}")
        found[name] = {"module": modname, "modality": facts["modality"], "trainer": facts["trainer"],
                       "default": bool(facts.get("default", False)), "layout": facts.get("layout", "frames")}
    order = {m: i for i, m in enumerate(MODALITIES)}
    return dict(sorted(found.items(), key=lambda kv: (order.get(kv[1]["modality"], 99), not kv[1]["default"],
                                                      kv[1]["trainer"] == "filter", kv[0])))


class _ArchModules(Mapping):
    """name -> module path of every registered architecture (discovered on first use)."""

    def __getitem__(self, name: str) -> str:
        return _declared()[name]["module"]

    def __iter__(self):
        return iter(_declared())

    def __len__(self) -> int:
        return len(_declared())

    def __repr__(self) -> str:
        return repr(dict(self))


ARCHS: Mapping[str, str] = _ArchModules()
"""Registered architecture name -> the module in `models/nets` that declares it."""


def names(modality: str | None = None, trainable: bool | None = None, trainer: str | None = None) -> list[str]:
    """Registered architecture names (defaults first), optionally only those of a modality / trainability / trainer.

    Reads module sources only: importing torch is not needed to list them.
    """
    out = []
    for name, facts in _declared().items():
        if modality is not None and facts["modality"] != modality:
            continue
        if trainable is not None and (facts["trainer"] != "filter") != bool(trainable):
            continue
        if trainer is not None and facts["trainer"] != trainer:
            continue
        out.append(name)
    return out


def _check_name(name: str) -> dict:
    facts = _declared().get(name)
    if facts is None:
        raise UserError(f"unknown architecture {name!r}; choose one of {', '.join(_declared())}")
    return facts


def modality(name: str) -> str:
    """`2p`, `ephys` or `fmri` (from source: no torch import)."""
    return _check_name(name)["modality"]


def trainer(name: str) -> str:
    """`imaging`, `ephys` or `filter` (from source: no torch import)."""
    return _check_name(name)["trainer"]


def default_name(modality: str = "2p") -> str:
    """The architecture `train` uses for a modality when none is named."""
    cands = [n for n, f in _declared().items() if f["modality"] == modality]
    if not cands:
        raise UserError(f"no architecture reads {modality!r} data")
    marked = [n for n in cands if _declared()[n]["default"]]
    return (marked or cands)[0]


def arch_module(arch: str) -> ModuleType:
    modname = _check_name(arch)["module"]
    try:
        return importlib.import_module(modname)
    except ModuleNotFoundError as exc:
        if exc.name == modname:
            raise UserError(f"architecture {arch!r} is not available in this build of livedenoise") from None
        raise


def info(arch: str) -> Arch:
    """The `Arch` declaration of a registered architecture."""
    mod = arch_module(arch)
    decl = getattr(mod, "ARCH", None)
    if not isinstance(decl, Arch) or decl.name != arch:
        raise RuntimeError(f"{mod.__name__}.ARCH does not declare architecture {arch!r}")
    return decl


def arch_for(card) -> Arch:
    """The `Arch` declaration of a card's architecture."""
    return info(card.arch)


def defaults(arch: str, preset: str | None = None) -> dict[str, Any]:
    """A copy of the defaults `train` uses for `arch` (pre, post, omission, preset, loss, crop, batch, lr), with
    those of `preset` (default: the architecture's default preset) where it declares its own."""
    a = info(arch)
    out = dict(a.defaults)
    out.update(a.preset_defaults.get(preset or out["preset"], {}))
    return out


def presets(arch: str) -> list[str]:
    return list(info(arch).presets)


def _hook(card_or_arch, name: str):
    arch = card_or_arch if isinstance(card_or_arch, str) else card_or_arch.arch
    return getattr(arch_module(arch), name, None)


# --------------------------------------------------------------------------- cards and networks


def make_card(arch: str, *, preset: str | None = None, pre: int | None = None, post: int | None = None,
              omission: int | None = None, modality: str | None = None, norm_mean: float = 0.0, norm_std: float = 1.0,
              training: dict | None = None, **extra):
    """A fresh model card for `arch`; None arguments take the architecture's defaults.

    `extra` goes to the module's ``make_card`` when it has one (e.g. ``n_channels``,
    ``layout`` for ephys models; filter parameters for `classic`), else to the card
    (``frame_shape``). Raises ValueError for a bad preset or window.
    """
    decl = info(arch)
    mod = arch_module(arch)
    preset = decl.defaults["preset"] if preset is None else preset
    d = defaults(arch, preset)
    pre = int(d["pre"] if pre is None else pre)
    post = int(d["post"] if post is None else post)
    omission = int(d["omission"] if omission is None else omission)
    if preset not in decl.presets:
        raise ValueError(f"unknown {arch} preset {preset!r}; choose one of {', '.join(decl.presets)}")
    if hasattr(mod, "make_card"):
        if modality is not None:
            extra["modality"] = modality
        return mod.make_card(pre=pre, post=post, omission=omission, preset=preset, norm_mean=float(norm_mean),
                             norm_std=float(norm_std), training=training, **extra)
    from livedenoise.models.card import ModelCard

    params = mod.preset_params(preset)
    spec = mod.window(pre, post, omission)
    return ModelCard(arch, params, modality or decl.modality, pre, post, omission, list(spec.offsets),
                     layout=extra.pop("layout", decl.layout), norm_mean=float(norm_mean), norm_std=float(norm_std),
                     training=training or {}, **extra)


def build_network(card):
    """The torch module for a card, with freshly initialised weights."""
    return arch_module(card.arch).build(card)


# --------------------------------------------------------------------------- the one length rule


def min_frames(card) -> int:
    """Fewest frames (or samples) a recording must have for this model: the one length rule.

    `train`, `denoise` and `serve` all ask this function, so a movie one of them
    accepts is accepted by the others. An architecture module may declare
    ``min_frames(card)``; otherwise a window of input offsets needs the target
    plus one usable neighbour (2), and the edge rule of `WindowSpec.source_indices`
    supplies the rest of the window.
    """
    fn = _hook(card, "min_frames")
    if fn is not None:
        return int(fn(card))
    return 2


def check_length(card, n: int, what: str) -> None:
    """UserError naming the rule when `what` (e.g. "movie.tif") has fewer than `min_frames(card)` frames."""
    need = min_frames(card)
    if n < need:
        unit = {"ephys": "samples", "fmri": "volumes"}.get(card.modality, "frames")
        raise UserError(f"{what} has {n} {unit} but this {card.arch} model needs at least {need}; "
                        "use a longer recording or a model with a smaller window")


# --------------------------------------------------------------------------- training pairs


def target_shift(card) -> int | None:
    """None: a training target is the predicted frame (one output per window). k: every input
    frame's target is the frame k later, and the loss covers every input position (cad3d)."""
    fn = _hook(card, "target_shift")
    return None if fn is None else fn(card)


def training_outputs(card, net, on: bool) -> None:
    """Switch a network whose training targets are shifted inputs (`target_shift`) to return
    every position (on) or the one prediction (off). No-op for single-output models."""
    fn = _hook(card, "training_outputs")
    if fn is not None:
        fn(net, bool(on))


def training_batch(card, data, batch: int, crop: int, channels_per_crop: int, rng):
    """(x, y, mask or None) torch tensors: one ephys training batch from normalised (samples, channels) data."""
    fn = _hook(card, "training_batch")
    if fn is None:
        raise UserError(f"{card.arch} is not trained on ephys recordings")
    return fn(card, data, batch, crop, channels_per_crop, rng)


def training_span(card, batch: int, crop: int) -> int:
    """Samples of one in-memory chunk that ephys training draws batches from."""
    fn = _hook(card, "training_span")
    if fn is None:
        raise UserError(f"{card.arch} is not trained on ephys recordings")
    return int(fn(card, batch, crop))


# --------------------------------------------------------------------------- export


def example_input(card, frame_shape):
    """A (1, ...) float32 torch tensor of zeros shaped like the model's input at `frame_shape`."""
    import torch

    fs = tuple(int(s) for s in frame_shape)
    fn = _hook(card, "example_input")
    if fn is not None:
        return torch.as_tensor(fn(card, fs), dtype=torch.float32)
    return torch.zeros((1, card.n_inputs, *fs), dtype=torch.float32)


def dynamic_axes(card) -> dict | None:
    """ONNX dynamic axes ({"input": {...}, "output": {...}}) of the module, or None (batch only)."""
    fn = _hook(card, "dynamic_axes")
    return None if fn is None else fn()


def describe_receptive_field(card) -> dict:
    """Receptive field and lag of a card's model.

    Returns {"arch", "spatial": [h, w] pixels across (upper bound), "temporal_span":
    [first offset, last offset], "temporal_frames", "inputs", "lag", "uses_target"}.
    The spatial extent comes from the arch module's ``spatial_extent(card)`` when it
    has one (filters with no network to ask), else the network's
    ``spatial_receptive_field()``; the rest from the card's window.
    """
    mod = arch_module(card.arch)
    if hasattr(mod, "spatial_extent"):
        spatial = list(mod.spatial_extent(card))
    else:
        net = mod.build(card)
        rf = int(net.spatial_receptive_field()) if hasattr(net, "spatial_receptive_field") else None
        spatial = [rf, rf] if rf is not None else None
    first, last = card.window.span
    return {
        "arch": card.arch,
        "spatial": spatial,
        "temporal_span": [first, last],
        "temporal_frames": last - first + 1,
        "inputs": len(card.offsets),
        "lag": card.lag,
        "uses_target": card.window.uses_target,
    }
