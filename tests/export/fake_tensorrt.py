"""Stand-ins for `tensorrt` and `pycuda.driver`, for exercising the TensorRT code paths on CPU.

They follow the TensorRT 10 / pycuda calls livedenoise makes: the "engine" is
a JSON blob naming the ONNX file, "device memory" is numpy byte arrays found
by their integer address, and ``execute_async_v3`` runs the ONNX with
onnxruntime on whatever the input buffer holds. This checks our wiring (shapes,
buffers, copies, chunking, sidecars, caching, refusals) -- not TensorRT.
"""

from __future__ import annotations

import json
import sys
import types

import numpy as np

GPU_NAME = "Fake GPU 9000"
CC = (9, 0)
VERSION = "10.99.0-fake"

# ---------------------------------------------------------------- pycuda.driver

_MEMORY: dict[int, "DeviceAllocation"] = {}


class DeviceAllocation:
    def __init__(self, nbytes: int):
        self.buf = np.zeros(int(nbytes), np.uint8)
        self.ptr = id(self.buf)
        _MEMORY[self.ptr] = self

    def __int__(self) -> int:
        return self.ptr

    def free(self) -> None:
        _MEMORY.pop(self.ptr, None)


def _bytes(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8)


def memcpy_htod(dst, src, stream=None):
    b = _bytes(src)
    dst.buf[: b.size] = b


def memcpy_dtoh(dst, src, stream=None):
    out = dst.reshape(-1).view(np.uint8)
    out[:] = src.buf[: out.size]


class _Context:
    pushed = 0

    def push(self):
        _Context.pushed += 1

    @staticmethod
    def pop():
        _Context.pushed -= 1


class Device:
    def __init__(self, i: int = 0):
        self.i = i

    @staticmethod
    def count() -> int:
        return 1

    def name(self) -> str:
        return GPU_NAME

    def compute_capability(self):
        return CC

    def retain_primary_context(self):
        return _Context()


class Stream:
    handle = 1234

    def synchronize(self):
        pass


def make_pycuda() -> types.ModuleType:
    drv = types.ModuleType("pycuda.driver")
    drv.init = lambda: None
    drv.Device = Device
    drv.Context = _Context
    drv.Stream = Stream
    drv.pagelocked_empty = lambda shape, dtype: np.empty(shape, dtype)
    drv.mem_alloc = DeviceAllocation
    drv.memcpy_htod = memcpy_htod
    drv.memcpy_htod_async = memcpy_htod
    drv.memcpy_dtoh_async = memcpy_dtoh
    pkg = types.ModuleType("pycuda")
    pkg.driver = drv
    return pkg


# ---------------------------------------------------------------- tensorrt


class _Flag:
    TF32, FP16, INT8 = "TF32", "FP16", "INT8"


class _Tensor:
    def __init__(self, name, shape):
        self.name, self.shape = name, tuple(shape)


class Network:
    def __init__(self):
        self.inputs = []
        self.onnx = None

    @property
    def num_inputs(self):
        return len(self.inputs)

    def get_input(self, i):
        return self.inputs[i]


class OnnxParser:
    def __init__(self, network, logger):
        self.network = network
        self.num_errors = 0

    def parse_from_file(self, path):
        import onnx

        m = onnx.load(path)
        for v in m.graph.input:
            dims = [d.dim_value if d.dim_value else -1 for d in v.type.tensor_type.shape.dim]
            self.network.inputs.append(_Tensor(v.name, dims))
        self.network.onnx = path
        return True

    def get_error(self, i):
        return "no error"


class Profile:
    def __init__(self):
        self.shapes = {}

    def set_shape(self, name, lo, opt, hi):
        self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))


class Config:
    def __init__(self):
        self.flags = {_Flag.TF32}
        self.profiles = []
        self.int8_calibrator = None
        self.calibration_profile = None
        self.pool = {}

    def set_memory_pool_limit(self, kind, n):
        self.pool[kind] = n

    def set_flag(self, f):
        self.flags.add(f)

    def clear_flag(self, f):
        self.flags.discard(f)

    def add_optimization_profile(self, p):
        self.profiles.append(p)
        return len(self.profiles) - 1

    def set_calibration_profile(self, p):
        self.calibration_profile = p


class Builder:
    def __init__(self, logger):
        pass

    def create_network(self, flags=0):
        assert flags == 0
        return Network()

    def create_builder_config(self):
        return Config()

    def create_optimization_profile(self):
        return Profile()

    def build_serialized_network(self, network, config):
        name = network.get_input(0).name
        lo, opt, hi = config.profiles[0].shapes[name]
        calibrated = 0
        if config.int8_calibrator is not None:
            cal = config.int8_calibrator
            while True:
                ptrs = cal.get_batch([name])
                if ptrs is None:
                    break
                assert _MEMORY[ptrs[0]].buf.any()
                calibrated += cal.get_batch_size()
            cal.write_calibration_cache(b"fake-calibration")
        blob = {"onnx": network.onnx, "input": name, "min": lo, "max": hi, "flags": sorted(config.flags), "calibrated": calibrated}
        return json.dumps(blob).encode()


class IInt8EntropyCalibrator2:
    def __init__(self):
        pass


class TensorIOMode:
    INPUT, OUTPUT = "INPUT", "OUTPUT"


class Engine:
    def __init__(self, blob):
        import onnxruntime as ort

        self.blob = blob
        self.session = ort.InferenceSession(blob["onnx"], providers=["CPUExecutionProvider"])
        self.names = [blob["input"], self.session.get_outputs()[0].name]
        self.out_tail = tuple(self.session.get_outputs()[0].shape[1:])
        self.num_io_tensors = 2

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_mode(self, name):
        return TensorIOMode.INPUT if name == self.names[0] else TensorIOMode.OUTPUT

    def get_tensor_profile_shape(self, name, profile):
        return [self.blob["min"], self.blob["min"], self.blob["max"]]

    def get_tensor_shape(self, name):
        return (-1, *self.blob["max"][1:]) if name == self.names[0] else (-1, *self.out_tail)

    def get_tensor_dtype(self, name):
        return "float32"

    def create_execution_context(self):
        return Context(self)


class Context:
    def __init__(self, engine):
        self.engine = engine
        self.addresses = {}
        self.shape = None
        self.calls = 0

    def set_input_shape(self, name, shape):
        lo, hi = self.engine.blob["min"], self.engine.blob["max"]
        if not lo[0] <= shape[0] <= hi[0] or tuple(shape[1:]) != tuple(hi[1:]):
            return False
        self.shape = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        return self.shape if name == self.engine.names[0] else (self.shape[0], *self.engine.out_tail)

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = int(ptr)
        return True

    def execute_async_v3(self, stream_handle):
        assert stream_handle == Stream.handle
        self.calls += 1
        n = int(np.prod(self.shape)) * 4
        x = _MEMORY[self.addresses[self.engine.names[0]]].buf[:n].view(np.float32).reshape(self.shape)
        y = self.engine.session.run(None, {self.engine.names[0]: x})[0]
        if _Flag.FP16 in self.engine.blob["flags"]:
            y = y.astype(np.float16).astype(np.float32)
        out = _MEMORY[self.addresses[self.engine.names[1]]].buf
        b = _bytes(y)
        out[: b.size] = b
        return True


class Runtime:
    def __init__(self, logger):
        pass

    def deserialize_cuda_engine(self, data):
        try:
            return Engine(json.loads(bytes(data)))
        except ValueError:
            return None


class Logger:
    WARNING = 2

    def __init__(self, level=None):
        pass


def make_tensorrt() -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = VERSION
    for name, obj in dict(Logger=Logger, Builder=Builder, OnnxParser=OnnxParser, Runtime=Runtime, BuilderFlag=_Flag,
                          IInt8EntropyCalibrator2=IInt8EntropyCalibrator2, TensorIOMode=TensorIOMode).items():
        setattr(trt, name, obj)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.nptype = lambda dt: np.dtype(dt).type
    return trt


def install(monkeypatch) -> None:
    """Put the stand-ins in sys.modules for one test (and reset livedenoise's TensorRT logger)."""
    pkg = make_pycuda()
    monkeypatch.setitem(sys.modules, "pycuda", pkg)
    monkeypatch.setitem(sys.modules, "pycuda.driver", pkg.driver)
    monkeypatch.setitem(sys.modules, "tensorrt", make_tensorrt())
    import livedenoise.export.tensorrt_engine as te

    monkeypatch.setattr(te, "_TRT_LOGGER", None)

    class Graphs:
        """CUDA graphs without a driver: 'capture' remembers the enqueue, 'launch' replays it."""

        launched = 0

        def __init__(self):
            self.captured = {}

        def capture(self, handle, enqueue):
            key = len(self.captured) + 1
            self.captured[key] = enqueue
            return key

        def launch(self, exe, handle):
            Graphs.launched += 1
            assert self.captured[exe]()

        def destroy(self, exe):
            self.captured.pop(exe, None)

    monkeypatch.setattr(te, "_DriverGraphs", Graphs)
