"""ONNX -> TensorRT engine with the TensorRT 10 Python builder API (no trtexec).

``build_engine``: ``trt.Builder`` -> explicit-batch network (the only kind in
TensorRT 10) -> ``trt.OnnxParser`` -> builder config with a workspace memory
pool limit, precision flags, one optimisation profile for batch 1..max_batch
(opt = min(4, max)) at the ONNX's fixed frame size -> ``build_serialized_network``
-> the ``.engine`` file plus a JSON sidecar (``<engine>.json``).

Precision:

* ``fp32``: TF32 is switched off, so the engine computes in true fp32.
* ``fp16``: ``BuilderFlag.FP16`` (TensorRT keeps fp32 where fp16 is slower or
  unsupported). Inputs and outputs stay fp32.
* ``int8``: post-training calibration (implicit quantization) with an
  ``IInt8EntropyCalibrator2`` fed with normalised windows from ``--calibrate
  MOVIE`` (or a simulated movie); FP16 is enabled too, for the layers that
  stay in floating point. The calibration table is cached next to the engine
  (``<engine>.calib``). Implicit quantization is deprecated in recent TensorRT
  10 releases in favour of explicit Q/DQ graphs, which would need an extra
  quantization toolkit; the calibrator path is what TensorRT 10 still
  supports out of the box.

The sidecar holds the model card, TensorRT version, GPU name, compute
capability, precision, build flags, batch profile, input shape and the ONNX it
came from (its format and reader live with the runtime, `engines.tensorrt`, which
refuses an engine whose sidecar names another GPU or TensorRT version).

Engine cache: ``cached_engine(onnx, precision)`` keeps engines next to the
ONNX as ``<onnx stem>.<gpu>-sm<cc>.trt<version>.<precision>.engine`` (in the
livedenoise cache folder when that folder is read-only), building on first use.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import re
from pathlib import Path

import numpy as np

from livedenoise import __version__
from livedenoise.errors import UserError
from livedenoise.export.engines.base import cache_dir, read_onnx_card
from livedenoise.export.engines.tensorrt import (
    SIDECAR_FORMAT,
    SIDECAR_VERSION,
    CudaContext,
    gpu_info,
    import_tensorrt,
    read_sidecar,
    sidecar_path,
    trt_logger,
)

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_WORKSPACE_GIB = 4.0


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "gpu"


def engine_cache_path(onnx_path, info: dict, precision: str) -> Path:
    onnx_path = Path(onnx_path)
    cc = info["compute_capability"].replace(".", "")
    name = f"{onnx_path.stem}.{_slug(info['gpu_name'])}-sm{cc}.trt{info['tensorrt_version']}.{precision}.engine"
    here = onnx_path.with_name(name)
    if os.access(onnx_path.parent, os.W_OK):
        return here
    digest = hashlib.sha256(str(onnx_path.resolve()).encode()).hexdigest()[:12]
    return cache_dir() / "engines" / f"{digest}-{name}"


def cached_engine(onnx_path, precision: str = "fp32", max_batch: int = 16) -> Path:
    """The engine for `onnx_path` on this GPU/TensorRT/precision, built and cached on first use."""
    if precision not in ("fp32", "fp16"):
        raise UserError(f"on-the-fly engines are fp32 or fp16; build {precision} engines with `livedenoise export ... --tensorrt OUT.engine --precision {precision} --calibrate MOVIE`")
    info = gpu_info()
    path = engine_cache_path(onnx_path, info, precision)
    onnx_sha = _sha256(onnx_path)
    if path.is_file() and sidecar_path(path).is_file():
        try:
            sc = read_sidecar(path)
            if sc.get("onnx_sha256") == onnx_sha:
                return path
        except UserError:
            pass
    log.warning("building TensorRT %s engine %s (first use on this GPU; takes a while)", precision, path)
    build_engine(onnx_path, path, precision=precision, max_batch=max_batch)
    return path


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _make_calibrator(trt, cuda_ctx: CudaContext, batches: list[np.ndarray], cache_file: Path):
    """An IInt8EntropyCalibrator2 feeding `batches` (each (B, *window) float32) through one device buffer."""
    cuda = cuda_ctx.cuda

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batches = [np.ascontiguousarray(b, dtype=np.float32) for b in batches]
            self.index = 0
            with cuda_ctx:
                self.device = cuda.mem_alloc(max(b.nbytes for b in self.batches))

        def get_batch_size(self) -> int:
            return int(self.batches[0].shape[0])

        def get_batch(self, names, p_str=None):
            if self.index >= len(self.batches):
                return None
            batch = self.batches[self.index]
            self.index += 1
            with cuda_ctx:
                cuda.memcpy_htod(self.device, batch)
            return [int(self.device)]

        def read_calibration_cache(self):
            if cache_file.is_file():
                return cache_file.read_bytes()
            return None

        def write_calibration_cache(self, cache) -> None:
            cache_file.write_bytes(bytes(cache))

    return EntropyCalibrator()


def build_engine(
    onnx_path,
    engine_path,
    precision: str = "fp32",
    max_batch: int = 16,
    calibration: np.ndarray | None = None,
    calibration_source: str = "",
    workspace_gib: float = DEFAULT_WORKSPACE_GIB,
    source: str | None = None,
) -> dict:
    """Build and write `engine_path` + sidecar; returns the sidecar dict.

    `calibration` ((N, *window) float32 normalised windows) is required for int8.
    """
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if max_batch < 1:
        raise UserError(f"--max-batch must be >= 1 (got {max_batch})")
    trt = import_tensorrt()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    card = read_onnx_card(onnx_path)
    info = gpu_info()
    ctx = CudaContext(0)
    logger = trt_logger()
    with ctx:
        builder = trt.Builder(logger)
        network = builder.create_network(0)  # TensorRT 10: networks are always explicit-batch
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise UserError(f"TensorRT cannot parse {onnx_path}: {errors[:300]}")
        if network.num_inputs != 1:
            raise UserError(f"{onnx_path}: expected one input, found {network.num_inputs}")
        inp = network.get_input(0)
        tail = tuple(int(d) for d in inp.shape[1:])
        if any(d < 0 for d in tail):
            raise UserError(f"{onnx_path}: only the batch axis may be dynamic (input shape {tuple(inp.shape)}); re-export with --frame-shape")
        opt = min(4, max_batch)
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
        flags: list[str] = []
        if precision == "fp32":
            config.clear_flag(trt.BuilderFlag.TF32)
        if precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
            flags.append("FP16")
        profile = builder.create_optimization_profile()
        profile.set_shape(inp.name, (1, *tail), (opt, *tail), (max_batch, *tail))
        config.add_optimization_profile(profile)
        calib_note = None
        calibrator = None
        if precision == "int8":
            if calibration is None or len(calibration) == 0:
                raise UserError("int8 engines need calibration frames: pass --calibrate MOVIE")
            if tuple(calibration.shape[1:]) != tail:
                raise UserError(f"calibration windows {tuple(calibration.shape[1:])} do not match the engine input {tail}")
            cb = min(len(calibration), max_batch, 8)
            batches = [calibration[i : i + cb] for i in range(0, len(calibration) - cb + 1, cb)]
            config.set_flag(trt.BuilderFlag.INT8)
            flags.append("INT8")
            calib_cache = engine_path.with_name(engine_path.name + ".calib")
            if calib_cache.exists():
                calib_cache.unlink()
            calibrator = _make_calibrator(trt, ctx, batches, calib_cache)
            config.int8_calibrator = calibrator
            cal_profile = builder.create_optimization_profile()
            cal_profile.set_shape(inp.name, (cb, *tail), (cb, *tail), (cb, *tail))
            config.set_calibration_profile(cal_profile)
            calib_note = f"IInt8EntropyCalibrator2 on {len(batches) * cb} windows ({calibration_source})"
        if precision == "fp32":
            flags.append("no TF32")
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise UserError(f"TensorRT failed to build a {precision} engine from {onnx_path} (see the TensorRT log above)")
        engine_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = engine_path.with_name(engine_path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(serialized)
        os.replace(tmp, engine_path)
    sidecar = {
        "format": SIDECAR_FORMAT,
        "format_version": SIDECAR_VERSION,
        "card": card.to_dict(),
        "tensorrt_version": info["tensorrt_version"],
        "gpu_name": info["gpu_name"],
        "compute_capability": info["compute_capability"],
        "precision": precision,
        "build_flags": flags,
        "workspace_bytes": int(workspace_gib * (1 << 30)),
        "profile": {"min": 1, "opt": opt, "max": max_batch},
        "max_batch": max_batch,
        "input_shape": list(tail),
        "onnx": str(onnx_path.resolve()),
        "onnx_sha256": _sha256(onnx_path),
        "source": str(source) if source else None,
        "calibration": calib_note,
        "built_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "livedenoise_version": __version__,
    }
    sc = sidecar_path(engine_path)
    tmp = sc.with_name(sc.name + ".tmp")
    tmp.write_text(json.dumps(sidecar, indent=2, sort_keys=True))
    os.replace(tmp, sc)
    return sidecar
