"""The Engine contract and what every backend shares: model cards in ONNX files, input shapes, threads.

An engine maps a batch of normalised windows (B, C, *frame) float32 to the
normalised predictions (B, *frame) float32. Normalisation and window assembly
live with the callers (offline denoising, the live service), so every backend
computes exactly the same function.

This module imports no backend and nothing else from `livedenoise.export`; the
backends (`torch`, `onnxruntime`, `tensorrt`, one module each) import only it,
and `livedenoise.export.onnx_export` takes `CARD_KEY` / `example_input` from it.
`open_engine` (in `livedenoise.export.engines`) sits above them all and picks
the backend.

Engines exported for a fixed frame size (ONNX, TensorRT) refuse windows of
another size with a `UserError` naming both sizes.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from livedenoise.errors import UserError
from livedenoise.models.card import ModelCard

BACKENDS = ("auto", "torch", "onnxruntime", "onnxruntime-cuda", "onnxruntime-tensorrt", "tensorrt")
"""Values accepted for `backend` (and by the CLI's --backend)."""

CARD_KEY = "livedenoise.card"
"""ONNX metadata_props key holding the model card JSON."""


def sample_shape(card: ModelCard, frame_shape=None) -> tuple[int, ...] | None:
    """Shape of one input window (without the batch axis) at `frame_shape`, or None when unknown.

    Uses the architecture module's ``example_input(card, frame_shape)`` when it
    defines one (models whose input is not a stack of frames), else
    (n_inputs, H, W).
    """
    fs = frame_shape if frame_shape is not None else card.frame_shape
    if fs is None:
        return None
    return tuple(int(s) for s in example_input(card, fs).shape[1:])


def example_input(card: ModelCard, frame_shape):
    """A (1, ...) float32 torch tensor of zeros shaped like the model's input (the registry's rule)."""
    from livedenoise.models.registry import example_input as registry_example_input

    return registry_example_input(card, frame_shape)


def block_tile(card: ModelCard) -> tuple[int, int] | None:
    """(output samples per engine pass, context samples) for a block model whose architecture declares a tile.

    A block model (card.layout ``block``: `block-ephys`, `site-ephys`) is made of
    'valid' convolutions along time, so its output over a long block equals the
    concatenation of its outputs over tiles whose inputs overlap by the context
    (ctx_before + ctx_after): the tiling is exact (`Arch.tile`). None: one pass.
    """
    if card.layout != "block":
        return None
    from livedenoise.models.registry import arch_for

    tile = arch_for(card).tile
    if not tile:
        return None
    return int(tile), int(card.params["ctx_before"]) + int(card.params["ctx_after"])


def cache_dir() -> Path:
    """Where derived files (on-the-fly ONNX exports) go: $LIVEDENOISE_CACHE or ~/.cache/livedenoise."""
    env = os.environ.get("LIVEDENOISE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "livedenoise"


class Engine(ABC):
    """One model on one backend: `run` a batch of windows; `describe` says what runs where and why."""

    card: ModelCard
    backend: str
    reason: str = ""
    """Why this backend was picked (filled by open_engine)."""
    precision: str = "fp32"
    input_shape: tuple[int, ...] | None = None
    """Per-window input shape the engine was built for, None when any frame size works."""

    @abstractmethod
    def run(self, windows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(B, C, *frame) float32 -> (B, *frame) float32 (written into `out` when given)."""

    @property
    def frame_shape(self) -> tuple[int, ...] | None:
        """Output frame shape the engine is fixed to, or None."""
        if self.input_shape is None:
            return None
        fs = self.card.frame_shape
        return tuple(fs) if fs is not None else tuple(self.input_shape[1:])

    def check_windows(self, windows: np.ndarray) -> np.ndarray:
        windows = np.asarray(windows)
        if windows.ndim < 2:
            raise UserError(f"{self.backend} engine: expected a batch of windows (B, C, ...), got shape {windows.shape}")
        if self.input_shape is not None and tuple(windows.shape[1:]) != tuple(self.input_shape):
            built = "x".join(map(str, self.frame_shape or self.input_shape))
            got = "x".join(map(str, windows.shape[2:])) if windows.shape[1] == self.input_shape[0] else f"window {tuple(windows.shape[1:])}"
            raise UserError(
                f"{self.describe_short()} was built for {built} frames (input {tuple(self.input_shape)}), got {got}; "
                f"export again with `livedenoise export MODEL.pt --onnx OUT.onnx --frame-shape H W` for this size"
            )
        if self.input_shape is None and self.card.layout == "frames" and windows.shape[1] != self.card.n_inputs:
            raise UserError(f"{self.backend} engine: the model takes {self.card.n_inputs} input frames per window, got {windows.shape[1]}")
        if windows.dtype != np.float32 or not windows.flags.c_contiguous:
            windows = np.ascontiguousarray(windows, dtype=np.float32)
        return windows

    def _out(self, out: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
        if out is None:
            return np.empty(shape, np.float32)
        if tuple(out.shape) != tuple(shape) or out.dtype != np.float32:
            raise ValueError(f"out must be float32 of shape {shape}, got {out.dtype} {out.shape}")
        return out

    def warmup(self, batch: int = 1) -> None:
        shape = self.input_shape or sample_shape(self.card, self.card.frame_shape or [64, 64])
        x = np.zeros((batch, *shape), np.float32)
        self.run(x)
        self.run(x)

    def describe_short(self) -> str:
        return f"{self.backend} engine"

    @abstractmethod
    def describe(self) -> str:
        """One line for logs: backend, device, precision, model, and why it was picked."""

    def _why(self) -> str:
        return f" [picked: {self.reason}]" if self.reason else ""

    def close(self) -> None:
        pass

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_onnx_card(path: str | os.PathLike, metadata: dict | None = None) -> ModelCard:
    """The model card embedded in an ONNX file's metadata (UserError when absent)."""
    path = Path(path)
    if metadata is None:
        import onnx

        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # protobuf DecodeError, OSError, ...
            raise UserError(f"{path} is not a readable ONNX file: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__}") from None
        metadata = {p.key: p.value for p in model.metadata_props}
    text = metadata.get(CARD_KEY)
    if text is None:
        raise UserError(
            f"{path} is an ONNX model without a livedenoise model card (metadata key {CARD_KEY!r}); "
            "export it with `livedenoise export MODEL.pt --onnx OUT.onnx`"
        )
    return ModelCard.from_json(text, source=str(path))


def default_threads() -> int:
    """CPUs this process may use (affinity-aware, unlike onnxruntime's own default)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)
