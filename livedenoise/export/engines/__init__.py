"""Engines: `open_engine` picks the backend for a model file; one module per backend below it.

`open_engine(path, backend)` is the one entry point for running a model, whatever
runs it:

- ``torch``: a ``.pt`` checkpoint in PyTorch (CUDA when available, else CPU);
  `engines.torch`.
- ``onnxruntime``: an ``.onnx`` export (or a ``.pt``, exported on the fly) on
  onnxruntime's CPU provider; ``onnxruntime-cuda`` / ``onnxruntime-tensorrt``
  use those execution providers when the installed onnxruntime has them;
  `engines.onnxruntime`.
- ``tensorrt``: a serialized ``.engine`` (with its JSON sidecar), or an
  ``.onnx`` / ``.pt`` whose engine is built once and cached next to the ONNX,
  keyed by GPU + TensorRT version + precision (`livedenoise.export.tensorrt_build`);
  `engines.tensorrt`.
- ``auto``: TensorRT when an NVIDIA GPU, TensorRT and pycuda are present; else
  onnxruntime (CUDA provider if present, else CPU) for ``.onnx``; PyTorch for
  ``.pt`` (on a CPU: onnxruntime where the architecture declares it faster,
  `Arch.cpu_backend`). Every engine carries a ``reason`` saying what was picked and why,
  and ``describe()`` prints it.

Every backend implements the `Engine` contract of `engines.base` and imports
only it. This module sits above the backends and above the exporters
(`onnx_export`, `tensorrt_build`), which it imports inside functions: they import
`engines.base`, which loads this package first.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from livedenoise.errors import UserError
from livedenoise.export.engines.base import BACKENDS, Engine, cache_dir
from livedenoise.export.engines.onnxruntime import ORT_PROVIDERS, OnnxRuntimeEngine, ort_providers_available
from livedenoise.export.engines.tensorrt import TensorRTEngine, require_tensorrt, tensorrt_status
from livedenoise.export.engines.torch import TorchEngine
from livedenoise.models.card import ModelCard

__all__ = ["open_engine", "Engine", "DeferredExportEngine", "BACKENDS"]


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def onnx_for_checkpoint(path: str | os.PathLike, frame_shape=None, opset: int = 17) -> Path:
    """ONNX export of a checkpoint at a frame size, cached by content under cache_dir()."""
    from livedenoise.export.onnx_export import export_onnx, resolve_frame_shape
    from livedenoise.models.checkpoint import read_checkpoint

    path = Path(path)
    card, _ = read_checkpoint(path)
    fs = resolve_frame_shape(card, frame_shape)
    key = _file_digest(path)[:16]
    out = cache_dir() / "onnx" / f"{path.stem}-{key}-{'x'.join(map(str, fs))}-op{opset}.onnx"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        export_onnx(path, out, frame_shape=fs, opset=opset)
    return out


class DeferredExportEngine(Engine):
    """A checkpoint opened for onnxruntime/TensorRT without a frame size: exported at the first batch's size."""

    def __init__(self, path: Path, backend: str, card: ModelCard, **options):
        self.path, self.backend, self.card, self._options = Path(path), backend, card, options
        self._inner: Engine | None = None
        self.precision = options.get("precision", "fp32")
        self.reason = f"asked for {backend}; {self.path.name} is exported to ONNX at the first batch's frame size"

    def run(self, windows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        if self._inner is None:
            windows = np.asarray(windows)
            if windows.ndim < 3:
                raise UserError(f"{self.backend} engine: expected a batch of windows (B, C, ...), got shape {windows.shape}")
            self._inner = open_engine(self.path, self.backend, frame_shape=tuple(windows.shape[2:]), **self._options)
            self._inner.reason = f"{self.reason}: {self._inner.reason}"
            self.card, self.input_shape, self.reason = self._inner.card, self._inner.input_shape, self._inner.reason
        return self._inner.run(windows, out)

    def warmup(self, batch: int = 1) -> None:
        if self._inner is not None:
            self._inner.warmup(batch)

    def describe(self) -> str:
        if self._inner is not None:
            return self._inner.describe()
        return f"{self.backend} (not exported yet): {self.card.summary()}{self._why()}"

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()


def _cpu_backend(path: Path) -> str:
    """The backend a checkpoint's architecture declares fastest on a CPU (`Arch.cpu_backend`)."""
    from livedenoise.models.checkpoint import read_checkpoint
    from livedenoise.models.registry import arch_for

    card, _ = read_checkpoint(path)
    return arch_for(card).cpu_backend


def open_engine(
    path: str | os.PathLike,
    backend: str = "auto",
    *,
    frame_shape=None,
    device: str | None = None,
    precision: str = "fp32",
    threads: int | None = None,
    cuda_graph: bool = True,
) -> Engine:
    """Open a .pt, .onnx or .engine with `backend`; the engine's `reason` says what was picked and why.

    `frame_shape` is needed only to turn a checkpoint without a frame size in
    its card into an ONNX/TensorRT engine. `precision` applies to TensorRT
    engines built on the fly from an ONNX (fp32 by default: exact parity; use
    `livedenoise export --tensorrt --precision fp16` for checked fp16 engines).
    """
    path = Path(path)
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    suffix = path.suffix.lower()
    if suffix not in (".pt", ".onnx", ".engine"):
        raise UserError(f"{path}: unknown model format {suffix or '(no extension)'!r}; give a .pt checkpoint, an .onnx export or a TensorRT .engine")
    if not path.is_file():
        raise UserError(f"model file {path} does not exist; check the path")

    if suffix == ".engine":
        if backend not in ("auto", "tensorrt"):
            raise UserError(f"{path} is a TensorRT engine; it runs only with --backend tensorrt (or auto), not {backend}")
        require_tensorrt()
        why = "a .engine file runs on TensorRT" if backend == "auto" else "asked for tensorrt"
        return TensorRTEngine(path, reason=why, cuda_graph=cuda_graph)

    if suffix == ".pt":
        if threads and backend in ("auto", "torch"):
            import torch

            torch.set_num_threads(int(threads))  # PyTorch's CPU threads are per process
        if backend == "auto":
            import torch

            dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
            if dev == "cpu" and _cpu_backend(path) == "onnxruntime":
                eng = open_engine(path, "onnxruntime", frame_shape=frame_shape, threads=threads)
                eng.reason = ("no CUDA GPU; this architecture runs faster in onnxruntime than in PyTorch on a CPU "
                              f"(exported on the fly, cached): {eng.reason}")
                return eng
            why = "a .pt checkpoint runs in PyTorch" + (
                "; CUDA GPU found" if dev.startswith("cuda") else "; no CUDA GPU for PyTorch, so CPU"
            ) + " (export it to ONNX/TensorRT for the faster backends)"
            return TorchEngine.from_checkpoint(path, dev, reason=why)
        if backend == "torch":
            import torch

            dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
            return TorchEngine.from_checkpoint(path, dev, reason=f"asked for torch; device {dev}")
        # onnxruntime / tensorrt from a checkpoint: export (cached) first -- at the
        # first batch's frame size when neither the caller nor the card names one.
        if frame_shape is None:
            from livedenoise.models.checkpoint import read_checkpoint

            card, _ = read_checkpoint(path)
            if card.frame_shape is None:
                return DeferredExportEngine(path, backend, card, precision=precision, threads=threads, cuda_graph=cuda_graph)
        onnx_path = onnx_for_checkpoint(path, frame_shape)
        eng = open_engine(onnx_path, backend, precision=precision, threads=threads, cuda_graph=cuda_graph)
        eng.reason = f"{eng.reason}; {path.name} exported to {onnx_path}"
        return eng

    # .onnx
    if backend == "torch":
        raise UserError(f"{path} is an ONNX export; the torch backend needs the .pt checkpoint it came from")
    if backend == "auto":
        ok, why = tensorrt_status()
        if ok:
            from livedenoise.export.tensorrt_build import cached_engine

            engine_path = cached_engine(path, precision=precision)
            return TensorRTEngine(engine_path, reason=f"{why} found; cached {precision} engine {engine_path.name}", cuda_graph=cuda_graph)
        providers = ort_providers_available()
        if "CUDAExecutionProvider" in providers:
            return OnnxRuntimeEngine(path, "CUDAExecutionProvider", threads, reason=f"{why}; onnxruntime has the CUDA provider")
        return OnnxRuntimeEngine(path, "CPUExecutionProvider", threads, reason=f"{why}; onnxruntime on CPU")
    if backend == "tensorrt":
        require_tensorrt()
        from livedenoise.export.tensorrt_build import cached_engine

        engine_path = cached_engine(path, precision=precision)
        return TensorRTEngine(engine_path, reason=f"asked for tensorrt; cached {precision} engine {engine_path.name}", cuda_graph=cuda_graph)
    return OnnxRuntimeEngine(path, ORT_PROVIDERS[backend], threads, reason=f"asked for {backend}")
