"""The Engine contract: one way to run a model, whatever backend runs it.

An engine maps a batch of normalised windows (B, C, *frame) float32 to the
normalised predictions (B, *frame) float32. Normalisation and window assembly
live with the callers (offline denoising, the live service), so every backend
computes exactly the same function.

Backends (``open_engine(path, backend)``):

- ``torch``: a ``.pt`` checkpoint in PyTorch (CUDA when available, else CPU).
- ``onnxruntime``: an ``.onnx`` export (or a ``.pt``, exported on the fly) on
  onnxruntime's CPU provider; ``onnxruntime-cuda`` / ``onnxruntime-tensorrt``
  use those execution providers when the installed onnxruntime has them.
- ``tensorrt``: a serialized ``.engine`` (with its JSON sidecar), or an
  ``.onnx`` / ``.pt`` whose engine is built once and cached next to the ONNX,
  keyed by GPU + TensorRT version + precision (see ``tensorrt_build``).
- ``auto``: TensorRT when an NVIDIA GPU, TensorRT and pycuda are present; else
  onnxruntime (CUDA provider if present, else CPU) for ``.onnx``; PyTorch for
  ``.pt``. Every engine carries a ``reason`` saying what was picked and why,
  and ``describe()`` prints it.

Engines exported for a fixed frame size (ONNX, TensorRT) refuse windows of
another size with a `UserError` naming both sizes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from livedenoise.errors import UserError
from livedenoise.models.card import ModelCard

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnxruntime", "onnxruntime-cuda", "onnxruntime-tensorrt", "tensorrt")
"""Values accepted for `backend` (and by the CLI's --backend)."""

ORT_PROVIDERS = {
    "onnxruntime": "CPUExecutionProvider",
    "onnxruntime-cuda": "CUDAExecutionProvider",
    "onnxruntime-tensorrt": "TensorrtExecutionProvider",
}

CARD_KEY = "livedenoise.card"
"""ONNX metadata_props key holding the model card JSON."""

TENSORRT_EXTRA = "pip install 'livedenoise[tensorrt]'"
TENSORRT_MAJOR = 10
"""The TensorRT major version our builder and runtime are written for. TensorRT 11
removed the weak-typing builder flags (FP16, INT8) and the int8 calibrator that
`tensorrt_build` uses, so 11.x is refused with this explanation rather than failing mid-build."""


def tensorrt_version_problem(version: str) -> str | None:
    """Why TensorRT `version` cannot be used here, or None when it can."""
    try:
        major = int(str(version).split(".")[0])
    except ValueError:
        return f"cannot read the TensorRT version {version!r}"
    if major != TENSORRT_MAJOR:
        return (f"TensorRT {version} is installed, but livedenoise builds and runs TensorRT {TENSORRT_MAJOR}.x engines "
                f"(TensorRT 11 removed the fp16/int8 builder flags it uses): "
                f"pip install 'tensorrt>={TENSORRT_MAJOR},<{TENSORRT_MAJOR + 1}'")
    return None


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
    """A (1, ...) float32 torch tensor of zeros shaped like the model's input."""
    import torch

    from livedenoise.models.registry import arch_module

    fs = tuple(int(s) for s in frame_shape)
    mod = arch_module(card.arch)
    fn = getattr(mod, "example_input", None)
    if fn is not None:
        x = fn(card, fs)
        return torch.as_tensor(x, dtype=torch.float32)
    return torch.zeros((1, card.n_inputs, *fs), dtype=torch.float32)


def cache_dir() -> Path:
    """Where derived files (on-the-fly ONNX exports) go: $LIVEDENOISE_CACHE or ~/.cache/livedenoise."""
    env = os.environ.get("LIVEDENOISE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "livedenoise"


class Engine(ABC):
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


class TorchEngine(Engine):
    backend = "torch"

    def __init__(self, card: ModelCard, net, device: str = "cpu", reason: str = ""):
        import torch

        self.card = card
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self._torch = torch
        self.reason = reason

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str = "cpu", reason: str = "") -> "TorchEngine":
        from livedenoise.models.checkpoint import load_model

        card, net = load_model(path)
        return cls(card, net, device, reason)

    def run(self, windows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        torch = self._torch
        windows = self.check_windows(windows)
        with torch.inference_mode():
            x = torch.from_numpy(windows).to(self.device)
            y = self.net(x)[:, 0]
            y = y.float().cpu().numpy()
        if out is None:
            return y
        self._out(out, y.shape)[...] = y
        return out

    def describe(self) -> str:
        return f"torch on {self.device} fp32: {self.card.summary()}{self._why()}"


# --------------------------------------------------------------------------- onnxruntime


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


def ort_providers_available() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


class OnnxRuntimeEngine(Engine):
    """onnxruntime session; outputs are written straight into the result array via IOBinding."""

    def __init__(self, path: str | os.PathLike, provider: str = "CPUExecutionProvider", threads: int | None = None, reason: str = ""):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"ONNX file {self.path} does not exist; create it with `livedenoise export MODEL.pt --onnx {self.path}`")
        available = ort.get_available_providers()
        if provider not in available:
            raise UserError(
                f"onnxruntime here has no {provider} (available: {', '.join(available)}); "
                "install onnxruntime-gpu for CUDA/TensorRT providers or use --backend onnxruntime"
            )
        self.threads = int(threads) if threads else default_threads()
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        providers = [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=so, providers=providers)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise UserError(f"{self.path} is not a loadable ONNX model: {first}") from None
        self.card = read_onnx_card(self.path, self.session.get_modelmeta().custom_metadata_map)
        self.provider = self.session.get_providers()[0]
        self.backend = {v: k for k, v in ORT_PROVIDERS.items()}.get(self.provider, "onnxruntime")
        self.reason = reason
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise UserError(f"{self.path}: expected one input and one output, found {len(inputs)} and {len(outputs)}")
        self.in_name, self.out_name = inputs[0].name, outputs[0].name
        in_shape = inputs[0].shape
        if all(isinstance(d, int) for d in in_shape[1:]):
            self.input_shape = tuple(int(d) for d in in_shape[1:])
        out_shape = outputs[0].shape
        self._out_tail = tuple(int(d) for d in out_shape[1:]) if all(isinstance(d, int) for d in out_shape[1:]) else None
        self._lock = threading.Lock()

    def run(self, windows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        windows = self.check_windows(windows)
        b = windows.shape[0]
        if self._out_tail is None:  # shapes unknown up front: let onnxruntime allocate
            y = self.session.run([self.out_name], {self.in_name: windows})[0][:, 0]
            if out is None:
                return np.ascontiguousarray(y, dtype=np.float32)
            self._out(out, y.shape)[...] = y
            return out
        frame = self._out_tail[1:]
        res = self._out(out, (b, *frame))
        if not res.flags.c_contiguous:
            tmp = self.run(windows)
            res[...] = tmp
            return res
        with self._lock:
            binding = self.session.io_binding()
            binding.bind_cpu_input(self.in_name, windows)
            binding.bind_output(self.out_name, "cpu", 0, np.float32, [b, *self._out_tail], res.ctypes.data)
            self.session.run_with_iobinding(binding)
        return res

    def describe(self) -> str:
        shape = "x".join(map(str, self.frame_shape)) if self.frame_shape else "any"
        return (
            f"onnxruntime {self.provider} ({self.threads} threads) fp32 {self.path.name} frames {shape}: "
            f"{self.card.summary()}{self._why()}"
        )


# --------------------------------------------------------------------------- picking a backend


def tensorrt_status() -> tuple[bool, str]:
    """(usable, why): TensorRT 10 + pycuda importable and a CUDA GPU visible."""
    try:
        import tensorrt as trt
    except ImportError:
        return False, f"TensorRT is not installed ({TENSORRT_EXTRA})"
    problem = tensorrt_version_problem(trt.__version__)
    if problem:
        return False, problem
    try:
        import pycuda.driver as cuda
    except ImportError:
        return False, f"pycuda is not installed ({TENSORRT_EXTRA})"
    try:
        cuda.init()
        n = cuda.Device.count()
    except Exception as exc:  # no driver, no device
        return False, f"no usable CUDA driver/GPU ({str(exc).strip()[:120] or type(exc).__name__})"
    if n < 1:
        return False, "no CUDA GPU visible"
    return True, f"NVIDIA GPU {cuda.Device(0).name()} with TensorRT {trt.__version__}"


def require_tensorrt() -> None:
    ok, why = tensorrt_status()
    if not ok:
        raise UserError(f"the tensorrt backend needs an NVIDIA GPU, TensorRT and pycuda: {why}")


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
        from livedenoise.export.engines.tensorrt import TensorRTEngine

        why = "a .engine file runs on TensorRT" if backend == "auto" else "asked for tensorrt"
        return TensorRTEngine(path, reason=why, cuda_graph=cuda_graph)

    if suffix == ".pt":
        if backend == "auto":
            import torch

            dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
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
            from livedenoise.export.engines.tensorrt import TensorRTEngine

            return TensorRTEngine(engine_path, reason=f"{why} found; cached {precision} engine {engine_path.name}", cuda_graph=cuda_graph)
        providers = ort_providers_available()
        if "CUDAExecutionProvider" in providers:
            return OnnxRuntimeEngine(path, "CUDAExecutionProvider", threads, reason=f"{why}; onnxruntime has the CUDA provider")
        return OnnxRuntimeEngine(path, "CPUExecutionProvider", threads, reason=f"{why}; onnxruntime on CPU")
    if backend == "tensorrt":
        require_tensorrt()
        from livedenoise.export.tensorrt_build import cached_engine
        from livedenoise.export.engines.tensorrt import TensorRTEngine

        engine_path = cached_engine(path, precision=precision)
        return TensorRTEngine(engine_path, reason=f"asked for tensorrt; cached {precision} engine {engine_path.name}", cuda_graph=cuda_graph)
    return OnnxRuntimeEngine(path, ORT_PROVIDERS[backend], threads, reason=f"asked for {backend}")
