"""`livedenoise bench stream`: end-to-end latency and the highest sustained input rate of `serve`.

For every model x backend x frame size it runs the real service (receiver
thread, ring, engine loop, output PUB) on loopback in this process, fed by a
paced publisher and read by a subscriber:

- highest sustained rate: the fastest input rate (frames/s) at which every
  frame is denoised (`--policy latest` skips nothing, the ring never
  overflows) and latency does not grow over the run (median of the last
  quarter within 2 frame periods + 20 ms of the first quarter), trying 0.6,
  0.8, 1.0 and 1.25 x the engine's batched throughput (then lower fractions),
  then `--fps` when nothing at or above it was sustained, then two bisections
  between the best rate sustained and the lowest that was not;
- latency: frame sent -> its denoised frame received, p50 / p99, at `--fps`
  (30 Hz, a typical two-photon rate), or at half the sustained rate when the
  model cannot sustain `--fps`; a lag-L model adds L frame periods.

The publisher and subscriber share the process (and, on a small machine, the
cores) with the service, so the numbers are a lower bound for a dedicated
machine. Without `--model`, two random-init checkpoints are compared in the
same run (speed does not depend on the weights): the model `train` builds
with no `--arch`/`--preset` (interp2d `fast`, pre 16, post 1) and `lite` (the
default before it: pre 8, post 1), each with its own default window; each row
then says its rate as a multiple of lite's.

Each row also gives the network's multiply-adds per frame (models/cost.py)
and the FLOP/s that makes at the highest sustained rate, next to this
machine's matrix-multiply rate measured in the same run (`matmul_gflops`):
how far the service is from the hardware's limit.
"""

from __future__ import annotations

import itertools
import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from livedenoise.errors import UserError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "stream",
        help="live service: end-to-end latency and highest sustained frame rate",
        description=__doc__.split("\n\n")[1],
    )
    p.add_argument("--model", action="append", default=None,
                   help="model file (repeatable); default: the default model (fast) and lite, random weights, "
                        "each with its default window")
    p.add_argument("--backend", action="append", default=None,
                   help="backend (repeatable); default: torch and onnxruntime")
    p.add_argument("--size", type=int, action="append", default=None, help="frame side in pixels (default 256 and 512)")
    p.add_argument("--fps", type=float, default=30.0, help="input rate for the latency measurement")
    p.add_argument("--seconds", type=float, default=3.0, help="length of each run")
    p.add_argument("--max-batch", type=int, default=8, help="serve --max-batch")
    p.add_argument("--max-fps", type=float, default=2000.0, help="stop raising the rate here")
    p.add_argument("--innovation", action="store_true",
                   help="measure each configuration twice: without and with `serve --innovation`")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.set_defaults(func=run)


# ----------------------------------------------------------------------------- one run
def run_once(engine, shape: tuple[int, int], fps: float, seconds: float, max_batch: int = 8,
             policy: str = "latest", warm_fraction: float = 0.1, innovation: bool = False) -> dict:
    """Publish `fps` x `seconds` frames through a fresh service; latency and counters."""
    import zmq

    from livedenoise.stream.protocols.frames import ControlMessage, FrameHeader, FrameMessage, decode, encode_frame
    from livedenoise.stream.loopback import free_endpoints
    from livedenoise.stream.replay import open_publisher, wait_for_subscriber
    from livedenoise.stream.service import ServeConfig, Service

    n = max(24, int(round(fps * seconds)))
    endpoint_in, endpoint_out = free_endpoints(2)
    cfg = ServeConfig(input=endpoint_in, output=endpoint_out, policy=policy, max_batch=max_batch, ring=max(256, 4 * max_batch),
                      stats_interval=0.5, innovation=innovation)
    stop = threading.Event()
    svc = Service(cfg, engine, stop)
    result: dict = {}
    th = threading.Thread(target=lambda: result.update(svc.run()), daemon=True)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"frame")
    sub.setsockopt(zmq.SUBSCRIBE, b"stats")  # the first stats message says the subscription is in place
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.connect(cfg.output)
    received = np.full(n, np.nan)
    sent = np.full(n, np.nan)
    done = threading.Event()
    listening = threading.Event()

    def collect():
        while not done.is_set():
            if sub.poll(20):
                msg = decode(sub.recv_multipart())
                now = time.perf_counter()
                if isinstance(msg, FrameMessage) and 0 <= msg.header.frame < n:
                    received[msg.header.frame] = now
                elif isinstance(msg, ControlMessage):
                    listening.set()

    col = threading.Thread(target=collect, daemon=True)
    pub = open_publisher(ctx, cfg.input)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 2000, shape).astype(np.int16) for _ in range(8)]
    msgs = [encode_frame(FrameHeader(frame=0, t=0.0, shape=shape, dtype="int16"), f) for f in frames]
    th.start()
    col.start()
    try:
        if not wait_for_subscriber(pub, 30):
            raise UserError("bench: the service did not subscribe within 30 s")
        if not listening.wait(30):  # the service's output reaches the bench subscriber
            raise UserError("bench: no stats from the service's output within 30 s")
        t0 = time.perf_counter()
        for k in range(n):
            due = t0 + k / fps
            while (now := time.perf_counter()) < due:
                time.sleep(min(0.0005, due - now))
            parts = msgs[k % 8]
            header = FrameHeader(frame=k, t=k / fps, shape=shape, dtype="int16").to_json()
            sent[k] = time.perf_counter()
            pub.send_multipart([parts[0], header, parts[2]], copy=False)
        send_s = time.perf_counter() - t0
        deadline = time.monotonic() + 10 + seconds
        while time.monotonic() < deadline and np.isnan(received[: n - engine.card.lag]).any() \
                and svc.stats.skipped + svc.stats.overflow == 0:
            time.sleep(0.02)
    finally:
        stop.set()
        th.join(60)
        done.set()
        col.join(5)
        pub.close(linger=0)
        sub.close(linger=0)
        ctx.term()
    lat = (received - sent)[int(n * warm_fraction):] * 1000
    lat = lat[~np.isnan(lat)]
    q = max(1, len(lat) // 4)
    growth = float(np.median(lat[-q:]) - np.median(lat[:q])) if len(lat) >= 4 else None
    return {
        "latency_growth_ms": None if growth is None else round(growth, 2),
        "fps_target": fps, "fps_sent": round(n / send_s, 1), "frames": n,
        "frames_out": int(result.get("frames_out", 0)), "skipped": int(result.get("skipped", 0)),
        "overflow": int(result.get("overflow", 0)),
        "latency_ms_p50": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
        "latency_ms_p99": round(float(np.percentile(lat, 99)), 2) if len(lat) else None,
        "engine_ms": result.get("engine_ms"),
    }


def sustained(r: dict) -> bool:
    """Every frame out, nothing skipped, and latency not growing (the backlog stays bounded)."""
    if r["skipped"] or r["overflow"] or r["frames_out"] < r["frames"] or r["fps_sent"] < 0.95 * r["fps_target"]:
        return False
    return r["latency_growth_ms"] is not None and r["latency_growth_ms"] <= 2000.0 / r["fps_target"] + 20.0


def batched_throughput(engine, shape, max_batch: int) -> float:
    """Frames per second the engine alone manages in full batches."""
    x = np.zeros((max_batch, engine.card.n_inputs, *shape), np.float32)
    engine.run(x)
    t = time.perf_counter()
    reps = 0
    while reps < 2 or time.perf_counter() - t < 1.0:
        engine.run(x)
        reps += 1
    return reps * max_batch / (time.perf_counter() - t)


def highest_rate(engine, shape, seconds: float, max_batch: int, max_fps: float, log=None,
                 innovation: bool = False, target: float | None = None, refine: int = 2) -> tuple[float, list]:
    """Highest sustained rate: fractions of the engine's batched throughput (an upper bound), then `target`
    itself (e.g. the acquisition rate) when no fraction at or above it was sustained, then `refine` bisections
    between the best rate sustained and the lowest that was not."""
    cap = batched_throughput(engine, shape, max_batch)
    tried: list = []
    best = 0.0

    def attempt(rate):
        r = run_once(engine, shape, rate, seconds, max_batch, innovation=innovation)
        tried.append(r)
        ok = sustained(r)
        if log:
            log(f"    {rate:7.1f} frames/s -> {'sustained' if ok else 'not sustained'} (out {r['frames_out']}/{r['frames']}, "
                f"skipped {r['skipped']}, p50 {r['latency_ms_p50']} ms, growth {r['latency_growth_ms']} ms)")
        return ok

    up = [f * cap for f in (0.6, 0.8, 1.0, 1.25)]
    down = [f * cap for f in (0.4, 0.25, 0.15, 0.1)]
    failed = None
    for rate in up:
        rate = min(max_fps, rate)
        if not attempt(rate):
            failed = rate
            break
        best = rate
        if rate >= max_fps:
            break
    if not best:
        for rate in down:
            if attempt(rate):
                best = rate
                break
            failed = rate
    if target and best < target <= max_fps:
        if attempt(target):
            best = target
        else:
            failed = min(failed or target, target)
    for _ in range(refine):  # bisect between the best sustained and the lowest failed rate
        if not best or failed is None or failed - best < 0.05 * best:
            break
        mid = (best + failed) / 2
        if attempt(mid):
            best = mid
        else:
            failed = mid
    return round(best, 1), tried


REFERENCE = "lite"
"""The preset every row's rate is compared with (the default model before issue 14)."""


def _default_models(tmp: Path) -> list[Path]:
    """Random-weight checkpoints: what `train` builds with no --arch/--preset, and `lite` with its window."""
    import torch

    from livedenoise.models import registry
    from livedenoise.models.checkpoint import save_checkpoint

    arch = registry.default_name("2p")
    default = registry.defaults(arch)["preset"]
    out = []
    for preset in dict.fromkeys((default, REFERENCE)):
        card = registry.make_card(arch, preset=preset, norm_mean=1000.0, norm_std=500.0)  # the preset's own window
        torch.manual_seed(0)
        name = f"{'default-' if preset == default else ''}{preset}_pre{card.pre}_post{card.post}.pt"
        out.append(save_checkpoint(tmp / name, card, registry.build_network(card).state_dict()))
    return out


def _gmac(card, size: int) -> float | None:
    from livedenoise.models.cost import multiply_adds

    try:
        return multiply_adds(card, (size, size)) / 1e9
    except Exception:  # a network this frame size does not fit: no count, the speed still stands
        return None


def add_ratios(rows: list[dict]) -> None:
    """Each row's sustained rate / the `lite` row's with the same backend, size and innovation (in place)."""
    ref = {(r["backend"], r["size"], r["innovation"]): r["max_sustained_fps"]
           for r in rows if r.get("preset") == REFERENCE}
    for r in rows:
        base = ref.get((r["backend"], r["size"], r["innovation"]))
        r["x_lite"] = round(r["max_sustained_fps"] / base, 2) if base else None


def _open(model: Path, backend: str, size: int, tmp: Path):
    from livedenoise.export.engines import open_engine

    if backend.startswith("onnxruntime") and model.suffix == ".pt":
        from livedenoise.export.onnx_export import export_onnx

        onnx_path = tmp / f"{model.stem}_{size}.onnx"
        if not onnx_path.exists():
            export_onnx(model, onnx_path, frame_shape=(size, size))
        model = onnx_path
    return open_engine(model, backend)


def run(args) -> int:
    sizes = args.size or [256, 512]
    backends = args.backend or ["torch", "onnxruntime"]
    if any(s < 16 for s in sizes):
        raise UserError("--size must be >= 16 pixels")
    if args.seconds <= 0 or args.fps <= 0 or args.max_batch < 1:
        raise UserError("--seconds and --fps must be > 0 and --max-batch >= 1")
    rows = []

    def log(msg):
        if not args.json:
            print(msg, flush=True)

    from livedenoise.export.bench_engine import matmul_gflops

    peak = round(matmul_gflops(), 1)
    log(f"this machine's matrix-multiply rate: {peak:g} GFLOP/s (float32, torch, {_threads()} threads)")
    with tempfile.TemporaryDirectory(prefix="livedenoise-bench-") as d:
        tmp = Path(d)
        models = [Path(m) for m in args.model] if args.model else _default_models(tmp)
        for model in models:
            for backend, size, innovation in itertools.product(backends, sizes, (False, True) if args.innovation else (False,)):
                engine = _open(model, backend, size, tmp)
                gmac = _gmac(engine.card, size)
                log(f"{model.name} [{engine.card.summary()}] on {backend} at {size}x{size}"
                    f"{' with the innovation step' if innovation else ''}:")
                best, _ = highest_rate(engine, (size, size), args.seconds, args.max_batch, args.max_fps, log, innovation,
                                       target=args.fps)
                log(f"  highest sustained rate: {best:g} frames/s")
                rate = args.fps if best >= args.fps or not best else round(best / 2, 1)
                lat = run_once(engine, (size, size), rate, args.seconds, args.max_batch, innovation=innovation)
                log(f"  latency at {rate:g} Hz: p50 {lat['latency_ms_p50']} ms, p99 {lat['latency_ms_p99']} ms "
                    f"({lat['frames_out']}/{lat['frames']} frames out)")
                rows.append({
                    "model": model.name + (" + innovation" if innovation else ""), "innovation": innovation,
                    "arch": engine.card.summary(), "backend": backend,
                    "describe": engine.describe(), "size": size, "lag": engine.card.lag,
                    "latency_fps": rate, "latency_ms_p50": lat["latency_ms_p50"],
                    "latency_ms_p99": lat["latency_ms_p99"], "latency_all_out": sustained(lat),
                    "max_sustained_fps": best, "sustains_fps": best >= args.fps,
                    "preset": engine.card.params.get("preset"),
                    "gmac_per_frame": None if gmac is None else round(gmac, 3),
                    "gflops_sustained": None if gmac is None else round(2 * gmac * best, 1),
                    "peak_gflops": peak,
                })
    add_ratios(rows)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print()
        print(markdown_table(rows))
    return 0


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _fmt(v, spec: str = "g") -> str:
    return "-" if v is None else format(v, spec)


def markdown_table(rows: list[dict]) -> str:
    lines = ["| model | lag | backend | frame | input rate for latency (Hz) | latency p50 / p99 (ms) | max sustained (frames/s) "
             "| x lite | GMAC/frame | GFLOP/s at max (machine's matmul) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['lag']} | {r['backend']} | {r['size']}x{r['size']} | "
                     f"{r['latency_fps']:g} | {r['latency_ms_p50']} / {r['latency_ms_p99']} | {r['max_sustained_fps']:g} | "
                     f"{_fmt(r.get('x_lite'))} | {_fmt(r.get('gmac_per_frame'))} | "
                     f"{_fmt(r.get('gflops_sustained'))} ({_fmt(r.get('peak_gflops'))}) |")
    return "\n".join(lines)
