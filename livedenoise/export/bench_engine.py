"""`livedenoise bench engine`: frames/s and per-call latency of each backend and precision.

The model is a file (.pt, .onnx, .engine) or a named architecture built with
random weights (speed does not depend on the weights):

==========  =====================================  ===========================
name        network                                window (default)
==========  =====================================  ===========================
``di``      interp2d ``di`` (unet_single_1024)      pre=30 post=30 (60 inputs)
``lite``    interp2d ``lite``                       pre=8 post=1 (9 inputs)
``fast``    interp2d ``fast`` (the default)         pre=16 post=1 (17 inputs)
``cad3d``   cad3d ``rt`` (DeepCAD-RT 3D U-Net)      pre=16 post=0 (8 inputs)
==========  =====================================  ===========================

(``ARCH:PRESET`` also works, e.g. ``interp2d:lite``; ``--pre/--post/--omission``
override the window.) A checkpoint is exported once to ONNX at
``--frame-shape`` for the onnxruntime / TensorRT backends.

torch runs fp32 on the CPU; on CUDA it runs each of ``--precisions`` (fp32,
fp16), and with ``--cuda-graph`` each again replaying CUDA graphs.

For each backend x precision x batch: ``--warmup`` untimed calls, then timed
calls until ``--repeats`` calls or ``--budget`` seconds (at least one call).
frames/s = batch x calls / total time; latency p50/p99 per call in ms.
Backends that cannot run here are listed with the reason.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from livedenoise.errors import UserError

NAMED = {
    "di": ("interp2d", "di", 30, 30, 0),
    "lite": ("interp2d", "lite", None, None, None),  # None: the preset's own default window (registry)
    "fast": ("interp2d", "fast", None, None, None),
    "cad3d": ("cad3d", "rt", 16, 0, 0),
}
ALL_BACKENDS = ("torch", "onnxruntime", "onnxruntime-cuda", "tensorrt")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "engine",
        help="frames/s and latency p50/p99 of each engine backend and precision",
        description="Benchmark a model on every available backend (torch, onnxruntime, TensorRT) and precision.",
    )
    p.add_argument("--model", required=True, help="a .pt / .onnx / .engine file, or di, lite, cad3d (random weights), or ARCH:PRESET")
    p.add_argument("--frame-shape", nargs=2, type=int, metavar=("H", "W"), default=None, help="frame size (default: the model's, else 512 512)")
    p.add_argument("--batch", nargs="+", type=int, default=[1, 4, 16], help="batch sizes (default 1 4 16)")
    p.add_argument("--backends", nargs="+", choices=ALL_BACKENDS, default=None, help="backends to try (default: all available)")
    p.add_argument("--precisions", nargs="+", choices=("fp32", "fp16", "int8"), default=["fp32", "fp16"], help="TensorRT and torch-on-CUDA precisions (default fp32 fp16; int8, TensorRT only, calibrates on a simulated movie)")
    p.add_argument("--cuda-graph", action="store_true", help="torch on CUDA: also time each precision replaying CUDA graphs")
    p.add_argument("--repeats", type=int, default=20, help="timed calls per configuration (default 20)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls first (default 2)")
    p.add_argument("--budget", type=float, default=30.0, metavar="S", help="stop timing a configuration after S seconds (default 30)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch / onnxruntime (default: all this process may use)")
    p.add_argument("--pre", type=int, default=None, help="window frames before (named models only; default per model)")
    p.add_argument("--post", type=int, default=None, help="window frames after (named models only)")
    p.add_argument("--omission", type=int, default=None, help="hidden frames each side (named models only)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def named_checkpoint(spec: str, folder: Path, pre=None, post=None, omission=None) -> Path:
    """A random-weight checkpoint for `di`, `lite`, `cad3d` or `ARCH:PRESET`."""
    import torch

    from livedenoise.models import registry
    from livedenoise.models.checkpoint import save_checkpoint

    if spec in NAMED:
        arch, preset, d_pre, d_post, d_om = NAMED[spec]
    elif ":" in spec:
        arch, preset = spec.split(":", 1)
        d_pre = d_post = d_om = None
    else:
        raise UserError(f"--model {spec!r}: give a .pt/.onnx/.engine file or one of {', '.join(NAMED)} (or ARCH:PRESET)")
    pre = d_pre if pre is None else pre
    post = d_post if post is None else post
    omission = d_om if omission is None else omission
    try:  # a window still None: the preset's default (make_card); UserError for an unknown architecture
        card = registry.make_card(arch, preset=preset, pre=pre, post=post, omission=omission)
    except (ValueError, TypeError) as exc:
        raise UserError(f"--model {spec}: {exc}") from None
    torch.manual_seed(0)
    net = registry.build_network(card)
    path = folder / f"{spec.replace(':', '-')}.pt"
    save_checkpoint(path, card, net.state_dict())
    return path


def _percentile_ms(lat: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(lat) * 1e3, q))


def time_engine(engine, sample: tuple[int, ...], batch: int, repeats: int, warmup: int, budget: float) -> dict:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *sample), dtype=np.float32)
    out = None
    for _ in range(max(0, warmup)):
        out = engine.run(x, out=out)
    lat: list[float] = []
    start = time.perf_counter()
    while len(lat) < max(1, repeats):
        t0 = time.perf_counter()
        out = engine.run(x, out=out)
        lat.append(time.perf_counter() - t0)
        if time.perf_counter() - start > budget:
            break
    total = sum(lat)
    return {
        "batch": batch,
        "calls": len(lat),
        "frames_per_s": batch * len(lat) / total if total > 0 else float("inf"),
        "latency_ms_p50": _percentile_ms(lat, 50),
        "latency_ms_p99": _percentile_ms(lat, 99),
        "latency_ms_mean": total / len(lat) * 1e3,
    }


def matmul_gflops(threads: int | None = None, n: int = 1024, seconds: float = 1.0) -> float:
    """This machine's float32 matrix-multiply rate (GFLOP/s, median over calls of an n x n product, torch on
    the CPU with `threads` threads, default torch's own): the practical peak a convolution can approach."""
    import torch

    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)
        times: list[float] = []
        t_end = time.perf_counter() + seconds
        while len(times) < 3 or time.perf_counter() < t_end:
            t0 = time.perf_counter()
            torch.mm(a, b)
            times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old)
    return 2.0 * n ** 3 / float(np.median(times)) / 1e9


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _machine(threads: int) -> dict:
    info = {"cpu": _cpu_name(), "cpu_threads": threads, "python": platform.python_version()}
    try:
        import onnxruntime as ort
        import torch

        info["torch"] = torch.__version__
        info["onnxruntime"] = ort.__version__
        info["cuda_device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    try:
        from livedenoise.export.engines.tensorrt import tensorrt_status

        ok, why = tensorrt_status()
        info["gpu"] = why if ok else None
    except Exception:
        info["gpu"] = None
    return info


def _torch_on_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _configs(model: Path, backends, precisions, cuda_graph: bool = False) -> list[tuple[str, str]]:
    """(backend, precision) pairs; torch's precision may end in "+graph" (replayed CUDA graphs)."""
    suffix = model.suffix.lower()
    out = []
    for b in backends:
        if b == "tensorrt":
            if suffix == ".engine":
                out.append((b, "engine"))
            else:
                out += [(b, p) for p in precisions]
        elif b == "torch":
            ps = [p for p in precisions if p != "int8"] or ["fp32"]
            if _torch_on_cuda():
                out += [(b, p) for p in ps]
                out += [(b, f"{p}+graph") for p in ps] if cuda_graph else []
            else:
                out.append((b, "fp32"))
        else:
            out.append((b, "fp32"))
    return out


def run(args: argparse.Namespace) -> int:
    from livedenoise.export.engines.base import default_threads

    if any(b < 1 for b in args.batch):
        raise UserError("--batch sizes must be >= 1")
    threads = args.threads or default_threads()
    import torch

    torch_threads = torch.get_num_threads()
    try:
        return _run(args, threads)
    finally:
        torch.set_num_threads(torch_threads)


def _run(args: argparse.Namespace, threads: int) -> int:
    from livedenoise.export.engines.base import read_onnx_card, sample_shape
    from livedenoise.export.engines.onnxruntime import ort_providers_available
    from livedenoise.export.engines.tensorrt import tensorrt_status

    with tempfile.TemporaryDirectory(prefix="livedenoise-bench-") as tmp:
        tmp = Path(tmp)
        model = Path(args.model)
        if model.suffix.lower() not in (".pt", ".onnx", ".engine"):
            model = named_checkpoint(args.model, tmp, args.pre, args.post, args.omission)
        elif not model.is_file():
            raise UserError(f"model file {model} does not exist; check the path")
        suffix = model.suffix.lower()

        # what can run here
        available: dict[str, str | None] = {}
        trt_ok, trt_why = tensorrt_status()
        providers = ort_providers_available()
        for b in ALL_BACKENDS:
            if b == "torch":
                available[b] = None if suffix == ".pt" else "needs the .pt checkpoint"
            elif b == "onnxruntime":
                available[b] = None if suffix in (".pt", ".onnx") else "a .engine runs on TensorRT only"
            elif b == "onnxruntime-cuda":
                available[b] = (
                    "onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)" if "CUDAExecutionProvider" not in providers
                    else (None if suffix in (".pt", ".onnx") else "a .engine runs on TensorRT only")
                )
            else:
                available[b] = None if trt_ok else trt_why
        wanted = list(args.backends) if args.backends else list(ALL_BACKENDS)
        skipped = [{"backend": b, "reason": available[b]} for b in wanted if available[b]]
        if args.backends and skipped:
            for s in skipped:
                print(f"livedenoise bench engine: skipping {s['backend']}: {s['reason']}", file=sys.stderr)
        runnable = [b for b in wanted if not available[b]]

        # frame size and the ONNX the other backends need
        onnx_path = None
        if suffix == ".pt":
            from livedenoise.models.checkpoint import read_checkpoint

            card, _ = read_checkpoint(model)
            fs = tuple(args.frame_shape or card.frame_shape or (512, 512))
            if any(b != "torch" for b in runnable):
                from livedenoise.export.onnx_export import export_onnx

                onnx_path, _ = export_onnx(model, tmp / "model.onnx", frame_shape=fs)
        elif suffix == ".onnx":
            card = read_onnx_card(model)
            fs = tuple(card.frame_shape)
            onnx_path = model
        else:
            from livedenoise.export.engines.tensorrt import read_sidecar
            from livedenoise.models.card import ModelCard

            card = ModelCard.from_dict(read_sidecar(model)["card"])
            fs = tuple(card.frame_shape)
        if args.frame_shape and tuple(args.frame_shape) != fs:
            raise UserError(f"{model} is fixed to {fs[0]}x{fs[1]} frames; bench the .pt checkpoint to choose --frame-shape")
        sample = sample_shape(card, fs)

        results = []
        if not args.json:  # progress on stderr, headed like the table that follows on stdout
            print(f"measuring {card.summary()} at {fs[0]}x{fs[1]} (progress; the table follows):", file=sys.stderr)
            print(f"  {'backend':<16} {'prec':<5} {'batch':<9} {'frames/s':>9}", file=sys.stderr, flush=True)
        if "torch" in runnable and not _torch_on_cuda() and (args.cuda_graph or set(args.precisions) - {"fp32"}):
            what = [p for p in ("fp16", "int8") if p in args.precisions] + (["CUDA graphs"] if args.cuda_graph else [])
            skipped.append({"backend": "torch " + " ".join(what),
                            "reason": "torch runs fp32 on the CPU; fp16 and CUDA graphs need a CUDA GPU"})
        for backend, precision in _configs(model, runnable, args.precisions, args.cuda_graph):
            try:
                engine = _open(backend, precision, model, onnx_path, card, threads, tmp, fs, max(args.batch))
            except UserError as exc:
                skipped.append({"backend": f"{backend} {precision}", "reason": str(exc)})
                continue
            try:
                device = _device_of(engine)
                for b in args.batch:
                    if getattr(engine, "max_batch", b) < b:
                        skipped.append({"backend": f"{backend} {precision} batch {b}", "reason": f"engine max batch {engine.max_batch}"})
                        continue
                    try:
                        r = time_engine(engine, sample, b, args.repeats, args.warmup, args.budget)
                    except UserError as exc:  # e.g. a CUDA graph that cannot be captured
                        skipped.append({"backend": f"{backend} {precision} batch {b}", "reason": str(exc)})
                        continue
                    r.update(backend=backend, precision=getattr(engine, "precision", precision), device=device,
                             cuda_graph=bool(getattr(engine, "cuda_graph", False)))
                    results.append(r)
                    if not args.json:
                        print(f"  {backend:<16} {_prec(r):<5} batch {b:<3} {r['frames_per_s']:9.2f} frames/s", file=sys.stderr, flush=True)
            finally:
                engine.close()

    report = {
        "model": args.model,
        "card": card.summary(),
        "frame_shape": list(fs),
        "machine": _machine(threads),
        "command": _command(args),
        "results": results,
        "skipped": skipped,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_table(report))
    return 0


def _command(args) -> str:
    parts = ["livedenoise bench engine --model", args.model]
    if args.frame_shape:
        parts += ["--frame-shape", *map(str, args.frame_shape)]
    parts += ["--batch", *map(str, args.batch)]
    if args.backends:
        parts += ["--backends", *args.backends]
    if list(args.precisions) != ["fp32", "fp16"]:
        parts += ["--precisions", *args.precisions]
    if args.cuda_graph:
        parts.append("--cuda-graph")
    parts += ["--repeats", str(args.repeats), "--budget", f"{args.budget:g}"]
    if args.threads:
        parts += ["--threads", str(args.threads)]
    return " ".join(parts)


def _device_of(engine) -> str:
    if engine.backend == "torch":
        return str(engine.device)
    if engine.backend.startswith("onnxruntime"):
        return f"{engine.provider} x{engine.threads}"
    return getattr(engine, "gpu_name", "gpu")


def _open(backend, precision, model, onnx_path, card, threads, tmp, fs, max_batch):
    from livedenoise.export.engines.onnxruntime import OnnxRuntimeEngine
    from livedenoise.export.engines.tensorrt import TensorRTEngine
    from livedenoise.export.engines.torch import TorchEngine

    if backend == "torch":
        import torch

        from livedenoise.models.checkpoint import load_model

        torch.set_num_threads(threads)
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        _, net = load_model(model)
        prec, graph = precision.split("+")[0], precision.endswith("+graph")
        return TorchEngine(card, net, dev, reason="bench", precision=prec, cuda_graph=graph)
    if backend in ("onnxruntime", "onnxruntime-cuda"):
        provider = "CPUExecutionProvider" if backend == "onnxruntime" else "CUDAExecutionProvider"
        return OnnxRuntimeEngine(onnx_path, provider, threads, reason="bench")
    if precision == "engine":
        return TensorRTEngine(model, reason="bench")
    from livedenoise.export.tensorrt_build import build_engine

    calib = None
    if precision == "int8":
        from livedenoise.export.parity import movie_windows

        calib, _ = movie_windows(card, fs, None, n=16, seed=1)
    path = tmp / f"model.{precision}.engine"
    build_engine(onnx_path, path, precision=precision, max_batch=max_batch, calibration=calib, calibration_source="simulated movie")
    return TensorRTEngine(path, reason="bench")


def _prec(r: dict) -> str:
    return r["precision"] + ("+graph" if r.get("cuda_graph") else "")


def format_table(report: dict) -> str:
    fs = "x".join(map(str, report["frame_shape"]))
    lines = [f"bench engine: {report['model']} ({report['card']}) at {fs}"]
    m = report["machine"]
    gpu = m.get("gpu") or m.get("cuda_device") or "none"
    lines.append(f"machine: {m.get('cpu')} ({m.get('cpu_threads')} threads), GPU: {gpu}")
    cols = ("backend", "precision", "device", "batch", "calls", "frames/s", "p50 ms", "p99 ms")
    rows = [
        (r["backend"], _prec(r), r["device"], str(r["batch"]), str(r["calls"]), f"{r['frames_per_s']:.2f}", f"{r['latency_ms_p50']:.1f}", f"{r['latency_ms_p99']:.1f}")
        for r in report["results"]
    ]
    widths = [max([len(c)] + [len(row[i]) for row in rows]) for i, c in enumerate(cols)]
    lines.append("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in rows]
    for s in report["skipped"]:
        lines.append(f"skipped {s['backend']}: {s['reason']}")
    return "\n".join(lines)
