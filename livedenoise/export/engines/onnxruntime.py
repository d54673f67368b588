"""The ONNX Runtime backend: `OnnxRuntimeEngine` runs an `.onnx` export on the CPU, CUDA or TensorRT provider.

Outputs are written straight into the caller's array through IOBinding when the
export's output shape is fixed; the model card comes from the file's metadata
(`base.read_onnx_card`).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from livedenoise.errors import UserError
from livedenoise.export.engines.base import Engine, block_tile, default_threads, read_onnx_card

ORT_PROVIDERS = {
    "onnxruntime": "CPUExecutionProvider",
    "onnxruntime-cuda": "CUDAExecutionProvider",
    "onnxruntime-tensorrt": "TensorrtExecutionProvider",
}
"""Backend name -> onnxruntime execution provider."""


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
        self._tile = block_tile(self.card) if self._out_tail is None else None

    def run(self, windows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        windows = self.check_windows(windows)
        b = windows.shape[0]
        if self._tile is not None and windows.shape[-1] - self._tile[1] > self._tile[0]:
            return self._run_tiles(windows, out)
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

    def _run_tiles(self, windows: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        """A block model over tiles of `tile` output samples (exact: see `base.block_tile`)."""
        tile, ctx = self._tile
        n = windows.shape[-1] - ctx
        res = self._out(out, (windows.shape[0], *windows.shape[2:-1], n))
        for a in range(0, n, tile):
            e = min(n, a + tile)
            piece = np.ascontiguousarray(windows[..., a:e + ctx])
            res[..., a:e] = self.session.run([self.out_name], {self.in_name: piece})[0][:, 0]
        return res

    def describe(self) -> str:
        shape = "x".join(map(str, self.frame_shape)) if self.frame_shape else "any"
        return (
            f"onnxruntime {self.provider} ({self.threads} threads) fp32 {self.path.name} frames {shape}: "
            f"{self.card.summary()}{self._why()}"
        )
