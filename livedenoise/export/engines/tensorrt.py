"""The TensorRT backend: `TensorRTEngine` runs a serialized `.engine` (TensorRT 10 Python API + pycuda).

Also owns what says whether TensorRT can run here (`tensorrt_status`,
`require_tensorrt`, `gpu_info`) and the engine's JSON sidecar (`read_sidecar`,
`check_compatible`, `rebuild_command`); building engines is
`livedenoise.export.tensorrt_build`, which imports this module, never the reverse.

One engine = one deserialized ``ICudaEngine``, one execution context, one
CUDA stream, page-locked host buffers and device buffers sized for the
engine's largest batch, allocated once. A call copies the windows into the
page-locked input buffer, then on the stream: async host->device copy,
``execute_async_v3`` (tensor addresses bound once with ``set_tensor_address``),
async device->host copy, one synchronize.

CUDA graphs: pycuda has no stream-capture binding, so the driver API
(``cuStreamBeginCapture_v2`` / ``cuStreamEndCapture`` /
``cuGraphInstantiateWithFlags`` / ``cuGraphLaunch``) is called through ctypes
on pycuda's stream handle. One graph is captured per batch size, after a
plain ``execute_async_v3`` at that shape (TensorRT needs one to settle its
internal state); the copies stay outside the graph. If capture is refused
(an engine with host-synchronising layers, an old driver) the engine falls
back to plain enqueues and says so in ``describe()``.

All CUDA work is done with the device's primary context pushed, so an engine
made on one thread can run on another (the live service's worker).

Before deserializing, the engine's JSON sidecar is compared with this
machine: another GPU (name or compute capability) or another TensorRT version
is refused with a message naming both and the command that rebuilds it.
"""

from __future__ import annotations

import ctypes
import json
import logging
import threading
from pathlib import Path

import numpy as np

from livedenoise.errors import UserError
from livedenoise.export.engines.base import Engine
from livedenoise.models.card import ModelCard

log = logging.getLogger(__name__)

TENSORRT_EXTRA = "pip install 'livedenoise[tensorrt]'"
TENSORRT_MAJOR = 10
"""The TensorRT major version our builder and runtime are written for. TensorRT 11
removed the weak-typing builder flags (FP16, INT8) and the int8 calibrator that
`tensorrt_build` uses, so 11.x is refused with this explanation rather than failing mid-build."""
SIDECAR_FORMAT = "livedenoise-tensorrt-engine"
SIDECAR_VERSION = 1


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


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise UserError(f"TensorRT is not installed; install it with `{TENSORRT_EXTRA}` on a machine with an NVIDIA GPU") from None
    return trt


def import_pycuda():
    try:
        import pycuda.driver as cuda
    except ImportError:
        raise UserError(f"pycuda is not installed; install it with `{TENSORRT_EXTRA}`") from None
    return cuda


_TRT_LOGGER = None


def trt_logger():
    """One TensorRT logger for the process (TensorRT warns when builders/runtimes get different ones)."""
    global _TRT_LOGGER
    if _TRT_LOGGER is None:
        trt = import_tensorrt()
        _TRT_LOGGER = trt.Logger(trt.Logger.WARNING)
    return _TRT_LOGGER


class CudaContext:
    """The device's primary context (shared with TensorRT / the CUDA runtime), pushed per use."""

    def __init__(self, device: int = 0):
        cuda = import_pycuda()
        try:
            cuda.init()
            self.device = cuda.Device(device)
        except Exception as exc:
            raise UserError(f"no usable CUDA GPU {device}: {str(exc).strip()[:160] or type(exc).__name__}") from None
        self.cuda = cuda
        self.ctx = self.device.retain_primary_context()

    def __enter__(self):
        self.ctx.push()
        return self.cuda

    def __exit__(self, *exc) -> None:
        self.cuda.Context.pop()


def gpu_info(device: int = 0) -> dict:
    """Name, compute capability and TensorRT version of this machine."""
    trt = import_tensorrt()
    ctx = CudaContext(device)
    major, minor = ctx.device.compute_capability()
    return {"gpu_name": ctx.device.name(), "compute_capability": f"{major}.{minor}", "tensorrt_version": trt.__version__}


# --------------------------------------------------------------------------- CUDA graphs through the driver API


class _DriverGraphs:
    CAPTURE_MODE_THREAD_LOCAL = 1

    def __init__(self) -> None:
        lib = ctypes.CDLL("libcuda.so.1")
        vp = ctypes.c_void_p
        self.begin = lib.cuStreamBeginCapture_v2
        self.begin.argtypes = [vp, ctypes.c_int]
        self.end = lib.cuStreamEndCapture
        self.end.argtypes = [vp, ctypes.POINTER(vp)]
        self.instantiate = lib.cuGraphInstantiateWithFlags
        self.instantiate.argtypes = [ctypes.POINTER(vp), vp, ctypes.c_ulonglong]
        self.launch_fn = lib.cuGraphLaunch
        self.launch_fn.argtypes = [vp, vp]
        self.exec_destroy = lib.cuGraphExecDestroy
        self.exec_destroy.argtypes = [vp]
        self.graph_destroy = lib.cuGraphDestroy
        self.graph_destroy.argtypes = [vp]
        for f in (self.begin, self.end, self.instantiate, self.launch_fn, self.exec_destroy, self.graph_destroy):
            f.restype = ctypes.c_int

    def capture(self, stream_handle: int, enqueue) -> int:
        """Capture what `enqueue()` puts on the stream; returns an instantiated graph (CUgraphExec)."""
        s = ctypes.c_void_p(stream_handle)
        rc = self.begin(s, self.CAPTURE_MODE_THREAD_LOCAL)
        if rc:
            raise RuntimeError(f"cuStreamBeginCapture failed ({rc})")
        ok = False
        graph = ctypes.c_void_p()
        try:
            ok = bool(enqueue())
        finally:
            rc = self.end(s, ctypes.byref(graph))
        if rc or not graph.value or not ok:
            if graph.value:
                self.graph_destroy(graph)
            raise RuntimeError(f"stream capture failed (cuStreamEndCapture {rc}, enqueue ok={ok})")
        exe = ctypes.c_void_p()
        rc = self.instantiate(ctypes.byref(exe), graph, 0)
        self.graph_destroy(graph)
        if rc or not exe.value:
            raise RuntimeError(f"cuGraphInstantiate failed ({rc})")
        return int(exe.value)

    def launch(self, exe: int, stream_handle: int) -> None:
        rc = self.launch_fn(ctypes.c_void_p(exe), ctypes.c_void_p(stream_handle))
        if rc:
            raise RuntimeError(f"cuGraphLaunch failed ({rc})")

    def destroy(self, exe: int) -> None:
        self.exec_destroy(ctypes.c_void_p(exe))


# --------------------------------------------------------------------------- the sidecar: what an engine was built for


def sidecar_path(engine_path) -> Path:
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def read_sidecar(engine_path) -> dict:
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        raise UserError(f"TensorRT engine {engine_path} does not exist; build it with `livedenoise export MODEL.pt --tensorrt {engine_path}`")
    sc = sidecar_path(engine_path)
    if not sc.is_file():
        raise UserError(
            f"{engine_path} has no sidecar {sc.name} (model card, GPU, TensorRT version); it was not built by livedenoise or the "
            f"sidecar was lost: rebuild with `livedenoise export MODEL.pt --tensorrt {engine_path}`"
        )
    try:
        data = json.loads(sc.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{sc}: unreadable engine sidecar ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT or "card" not in data:
        raise UserError(f"{sc} is not a livedenoise engine sidecar")
    return data


def _describe_target(d: dict) -> str:
    return f"{d.get('gpu_name', '?')} (compute capability {d.get('compute_capability', '?')}) with TensorRT {d.get('tensorrt_version', '?')}"


def check_compatible(sidecar: dict, here: dict, engine_path) -> None:
    """Refuse an engine built for another GPU or TensorRT version (names both + the rebuild command)."""
    keys = ("gpu_name", "compute_capability", "tensorrt_version")
    if all(str(sidecar.get(k)) == str(here.get(k)) for k in keys):
        return
    raise UserError(
        f"{engine_path} was built for {_describe_target(sidecar)}, but this machine has {_describe_target(here)}; "
        f"TensorRT engines only run where they were built: rebuild it here with {rebuild_command(sidecar, engine_path)}"
    )



# --------------------------------------------------------------------------- the engine


class TensorRTEngine(Engine):
    backend = "tensorrt"

    def __init__(self, path, reason: str = "", cuda_graph: bool = True, device: int = 0):
        self.path = Path(path)
        self.reason = reason
        sidecar = read_sidecar(self.path)
        self.sidecar = sidecar
        self.card = ModelCard.from_dict(sidecar["card"], source=str(self.path))
        self.precision = sidecar.get("precision", "fp32")
        trt = import_tensorrt()
        self._trt = trt
        self._cuda_ctx = CudaContext(device)
        here = gpu_info(device)
        check_compatible(sidecar, here, self.path)
        self.gpu_name = here["gpu_name"]
        self._lock = threading.Lock()
        self._graphs: dict[int, int] = {}
        self._driver: _DriverGraphs | None = None
        self.graph_note = "CUDA graphs off" if not cuda_graph else "CUDA graphs on (captured per batch size)"
        self._use_graphs = bool(cuda_graph)
        self._cur_batch = -1
        with self._cuda_ctx as cuda:
            self._runtime = trt.Runtime(trt_logger())
            self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
            if self.engine is None:
                raise UserError(
                    f"TensorRT could not deserialize {self.path} (corrupt, or built by another TensorRT); "
                    f"rebuild it: {rebuild_command(sidecar, self.path)}"
                )
            self.context = self.engine.create_execution_context()
            names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
            ins = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            outs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
            if len(ins) != 1 or len(outs) != 1:
                raise UserError(f"{self.path}: expected one input and one output tensor, found {ins} and {outs}")
            self.in_name, self.out_name = ins[0], outs[0]
            _, _, max_shape = self.engine.get_tensor_profile_shape(self.in_name, 0)
            self.max_batch = int(max_shape[0])
            self.input_shape = tuple(int(d) for d in max_shape[1:])
            out_tail = tuple(int(d) for d in self.engine.get_tensor_shape(self.out_name))[1:]
            if any(d < 0 for d in out_tail):
                self.context.set_input_shape(self.in_name, (self.max_batch, *self.input_shape))
                out_tail = tuple(int(d) for d in self.context.get_tensor_shape(self.out_name))[1:]
            self._out_tail = out_tail
            in_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.in_name)))
            out_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.out_name)))
            self.stream = cuda.Stream()
            self.h_in = cuda.pagelocked_empty((self.max_batch, *self.input_shape), in_dtype)
            self.h_out = cuda.pagelocked_empty((self.max_batch, *out_tail), out_dtype)
            self.d_in = cuda.mem_alloc(self.h_in.nbytes)
            self.d_out = cuda.mem_alloc(self.h_out.nbytes)
            self.context.set_tensor_address(self.in_name, int(self.d_in))
            self.context.set_tensor_address(self.out_name, int(self.d_out))
        if self._use_graphs:
            try:
                self._driver = _DriverGraphs()
            except (OSError, AttributeError) as exc:
                self._use_graphs = False
                self.graph_note = f"CUDA graphs unavailable ({exc})"

    # -- execution

    def _set_batch(self, b: int) -> None:
        if b != self._cur_batch:
            if not self.context.set_input_shape(self.in_name, (b, *self.input_shape)):
                raise UserError(f"{self.path}: TensorRT refused batch {b} (profile 1..{self.max_batch})")
            self._cur_batch = b

    def _enqueue(self, b: int) -> None:
        self._set_batch(b)
        handle = self.stream.handle
        exe = self._graphs.get(b) if self._use_graphs else None
        if exe is not None:
            self._driver.launch(exe, handle)
            return
        if not self.context.execute_async_v3(handle):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        if self._use_graphs and self._driver is not None:
            # the plain run above settled TensorRT's state for this shape; capture it for next time
            try:
                self._graphs[b] = self._driver.capture(handle, lambda: self.context.execute_async_v3(handle))
            except RuntimeError as exc:
                self._use_graphs = False
                self.graph_note = f"CUDA graph capture refused, plain enqueues ({exc})"
                log.info("tensorrt: %s", self.graph_note)

    def run(self, windows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        windows = self.check_windows(windows)
        n = windows.shape[0]
        res = self._out(out, (n, *self._out_tail[1:]))
        cuda = self._cuda_ctx.cuda
        with self._lock, self._cuda_ctx:
            for a in range(0, n, self.max_batch):
                b = min(self.max_batch, n - a)
                h_in, h_out = self.h_in[:b], self.h_out[:b]
                np.copyto(h_in, windows[a : a + b], casting="same_kind")
                cuda.memcpy_htod_async(self.d_in, h_in, self.stream)
                self._enqueue(b)
                cuda.memcpy_dtoh_async(h_out, self.d_out, self.stream)
                self.stream.synchronize()
                res[a : a + b] = h_out[:, 0]
        return res

    def describe(self) -> str:
        return (
            f"tensorrt {self.precision} on {self.gpu_name} (TensorRT {self._trt.__version__}, batch 1..{self.max_batch}, "
            f"{self.graph_note}) {self.path.name}: {self.card.summary()}{self._why()}"
        )

    def close(self) -> None:
        if getattr(self, "_cuda_ctx", None) is None:
            return
        with self._cuda_ctx:
            if self._driver is not None:
                for exe in self._graphs.values():
                    self._driver.destroy(exe)
            self._graphs.clear()
            for name in ("d_in", "d_out"):
                buf = getattr(self, name, None)
                if buf is not None:
                    buf.free()
                    setattr(self, name, None)
            self.context = None
            self.engine = None
            self.stream = None
        self._cuda_ctx = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def rebuild_command(sidecar: dict, engine_path) -> str:
    src = sidecar.get("onnx")
    if not src or not Path(src).exists():
        src = sidecar.get("source") or src or "MODEL.pt"
    cmd = f"livedenoise export {src} --tensorrt {engine_path} --precision {sidecar.get('precision', 'fp32')} --max-batch {sidecar.get('max_batch', 16)}"
    if sidecar.get("precision") == "int8":
        cmd += " --calibrate MOVIE"
    return f"`{cmd}`"
