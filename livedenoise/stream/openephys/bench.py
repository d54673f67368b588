"""Owns `livedenoise bench ephys`: can the sidecar keep up with a Neuropixels probe?

Real-time factor = seconds of data processed / seconds of compute (> 1 keeps
up). Two parts:

- ingest: the ZMQ Interface path alone on one thread (decode + assemble
  384-channel blocks); `--zmq` also pushes the messages through a real PUB/SUB
  socket from a separate publisher process. Must be >= 2x real time.
- models: each ephys model x backend on random weights, run through the same
  streaming denoiser the sidecar uses, on blocks of `--block` samples.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODELS = ["block-ephys:fast", "block-ephys:base", "interp-ephys:lite", "interp-ephys:di"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "ephys",
        help="real-time factor of the Open Ephys sidecar: ingest and each ephys model x backend",
        description=__doc__,
    )
    p.add_argument("--channels", type=int, default=384)
    p.add_argument("--sample-rate", type=float, default=30000.0)
    p.add_argument("--block", type=int, default=1024, help="samples per block (the GUI's buffer size)")
    p.add_argument("--seconds", type=float, default=2.0, help="seconds of data per measurement (at most)")
    p.add_argument("--budget", type=float, default=20.0, help="wall seconds per model x backend (extrapolates past it)")
    p.add_argument("--models", nargs="*", default=MODELS, help="arch:preset to time (none: ingest only)")
    p.add_argument("--backends", nargs="*", default=["torch", "onnxruntime"])
    p.add_argument("--threads", type=int, default=None, help="compute threads (default all cores but one)")
    p.add_argument("--zmq", action="store_true", help="also time ingest through a real PUB/SUB socket")
    p.add_argument("--skip-ingest", action="store_true")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.set_defaults(func=run)


# --------------------------------------------------------------------------- ingest


def _encoded_blocks(C: int, block: int, n_blocks: int, rate: float):
    from livedenoise.stream.protocols.zmq_interface import DataEncoder

    enc = DataEncoder("ProbeA-AP", [f"CH{k + 1}" for k in range(C)], rate)
    data = (np.random.default_rng(0).standard_normal((C, block)) * 20).astype(np.float32)
    return [enc.encode_block(b * block, data) for b in range(n_blocks)]


def bench_ingest(C: int = 384, block: int = 1024, seconds: float = 2.0, rate: float = 30000.0) -> dict:
    """decode + assemble on this thread, messages pre-encoded (what the receiver thread does per message)."""
    from livedenoise.stream.sources.openephys import BlockAssembler
    from livedenoise.stream.protocols.zmq_interface import decode

    n_blocks = max(2, int(seconds * rate / block))
    msgs = _encoded_blocks(C, block, n_blocks, rate)
    asm = BlockAssembler()
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    n_out = 0
    for blk in msgs:
        for parts in blk:
            for item in asm.add(decode(parts)):
                n_out += getattr(item, "data", np.zeros((0, 0))).shape[-1]
    for item in asm.flush():
        n_out += getattr(item, "data", np.zeros((0, 0))).shape[-1]
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    data_s = n_blocks * block / rate
    return {"what": "ingest (decode+assemble, 1 thread)", "channels": C, "block": block, "messages": n_blocks * C,
            "samples": n_out, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "msgs_per_s": round(n_blocks * C / wall),
            "realtime_factor": round(data_s / wall, 2)}


def _publisher(port: int, C: int, block: int, n_blocks: int, rate: float) -> None:  # pragma: no cover - subprocess
    import zmq

    from livedenoise.stream.protocols.zmq_interface import DATA
    from livedenoise.stream.replay import wait_for_subscriber

    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)  # sends as the plugin's PUB does, and sees the receiver's subscription arrive
    pub.setsockopt(zmq.XPUB_VERBOSE, 1)
    pub.setsockopt(zmq.SNDHWM, 0)
    pub.bind(f"tcp://127.0.0.1:{port}")
    rep = ctx.socket(zmq.REP)
    rep.bind(f"tcp://127.0.0.1:{port + 1}")
    if rep.poll(60000):
        rep.recv()
        rep.send(b"heartbeat received")
    wait_for_subscriber(pub, 60.0, topic=DATA)  # nothing sent after this is lost to a slow-joining subscriber
    for blk in _encoded_blocks(C, block, n_blocks, rate):
        for parts in blk:
            pub.send_multipart(parts)
    time.sleep(2.0)
    pub.close(linger=5000)
    rep.close(0)
    ctx.term()


def bench_ingest_zmq(C: int = 384, block: int = 1024, seconds: float = 2.0, rate: float = 30000.0) -> dict:
    """PUB (another process, as fast as it can) -> SUB + decode + assemble (the sidecar's receiver thread)."""
    import multiprocessing as mp
    import queue
    import threading

    from livedenoise.stream.sources.openephys import Block, OpenEphysReceiver

    from livedenoise.stream.loopback import free_port

    port = free_port(span=2)  # data + heartbeat
    n_blocks = max(2, int(seconds * rate / block))
    proc = mp.get_context("spawn").Process(target=_publisher, args=(port, C, block, n_blocks, rate), daemon=True)
    proc.start()
    q: queue.Queue = queue.Queue()
    stop = threading.Event()
    rcv = OpenEphysReceiver(f"tcp://127.0.0.1:{port}", q, stop, heartbeat_s=0.5, idle_flush_s=60)
    rcv.start()
    got, t_first, t_last = 0, None, None
    deadline = time.monotonic() + 60 + seconds * 10
    while got < n_blocks * block and time.monotonic() < deadline:
        try:
            item = q.get(timeout=0.5)
        except queue.Empty:
            continue
        if isinstance(item, Block):
            t_first = t_first or time.perf_counter()
            got += item.data.shape[1]
            t_last = time.perf_counter()
    stop.set()
    rcv.join(2)
    proc.join(10)
    wall = (t_last - t_first) if t_first and t_last and t_last > t_first else float("nan")
    # the first block's arrival starts the clock: count the data after it
    data_s = (got - block) / rate
    return {"what": "ingest over ZMQ tcp (receiver thread)", "channels": C, "block": block, "samples": got,
            "wall_s": round(wall, 3), "realtime_factor": round(data_s / wall, 2) if wall == wall and wall > 0 else None,
            "receiver_cpu_s": round(rcv.cpu_s, 3),
            "cpu_realtime_factor": round(got / rate / rcv.cpu_s, 2) if rcv.cpu_s > 0 else None,
            "counters": {k: v for k, v in rcv.counters().items() if v}}


# --------------------------------------------------------------------------- models


def _card(spec: str, C: int):
    from livedenoise.models import registry

    arch, _, preset = spec.partition(":")
    if arch not in registry.names(modality="ephys"):
        raise SystemExit(f"unknown model {spec!r}; use arch:preset from {MODELS}")
    # the architecture's defaults: DeepInterpolation's window (30, 30, 1) and preset
    extra = {}
    if getattr(registry.arch_module(arch), "GEOMETRY", False):  # site-ephys: a Neuropixels 1.0 layout
        from livedenoise.io.probe_geometry import np1_positions

        extra["positions"] = np1_positions(C)
    return registry.make_card(arch, n_channels=C, preset=preset or None, norm_std=20.0, **extra)


def bench_model(spec: str, backend: str, C: int = 384, block: int = 1024, seconds: float = 2.0, budget: float = 20.0,
                rate: float = 30000.0, threads: int | None = None, workdir: str | None = None) -> dict:
    import torch

    from livedenoise.export.engines import open_engine
    from livedenoise.models.checkpoint import save_checkpoint
    from livedenoise.stream.ephys import SamplePipeline
    from livedenoise.models.registry import build_network

    card = _card(spec, C)
    torch.manual_seed(0)
    net = build_network(card)
    n_params = sum(p.numel() for p in net.parameters())
    wd = Path(workdir or tempfile.mkdtemp(prefix="bench-ephys-"))
    ck = wd / f"{spec.replace(':', '-')}.pt"
    save_checkpoint(ck, card, net.state_dict())
    os.environ.setdefault("LIVEDENOISE_CACHE", str(wd / "cache"))
    t_open = time.perf_counter()
    if backend == "onnxruntime" and card.frame_shape is None:
        from livedenoise.export.onnx_export import export_onnx

        onnx = wd / f"{ck.stem}.onnx"
        export_onnx(ck, onnx, frame_shape=(C, 1024 + 62))
        eng = open_engine(onnx, "onnxruntime", threads=threads)
    else:
        eng = open_engine(ck, backend, threads=threads)
    open_s = time.perf_counter() - t_open
    st = SamplePipeline(eng, C, max_block=max(block, 4096), batch=64 if spec.endswith(":di") else 256)
    x = (np.random.default_rng(0).standard_normal((block, C)) * 20).astype(np.float32)
    # warm-up: the first call builds kernels, and the first pass through the pipeline's rings pays their page
    # faults (site-ephys read 1.0x over 2 s from cold rings against 1.1x warm): push until the ring has wrapped
    # once, or for a quarter of the budget
    t_warm = time.perf_counter()
    for _ in range(max(1, -(-st.ring.capacity // block))):
        st.push(x)
        if time.perf_counter() - t_warm > budget / 4:
            break
    n_blocks = max(1, int(seconds * rate / block))
    t0 = time.perf_counter()
    done = 0
    for _ in range(n_blocks):
        st.push(x)
        done += block
        if time.perf_counter() - t0 > budget:
            break
    wall = time.perf_counter() - t0
    data_s = done / rate
    return {"model": spec, "backend": backend, "engine": eng.describe()[:120], "params": n_params, "channels": C,
            "block": block, "samples": done, "wall_s": round(wall, 3), "open_s": round(open_s, 2),
            "realtime_factor": round(data_s / wall, 4), "lag_samples": card.lag}


def _md(rows: list[dict]) -> str:
    lines = ["| what | backend | params | samples timed | wall s | real-time factor |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.get('model', r.get('what'))} | {r.get('backend', '-')} | {r.get('params', '-')} | "
                     f"{r.get('samples')} | {r.get('wall_s')} | {r.get('realtime_factor')} |")
    return "\n".join(lines)


def run(args) -> int:
    import torch

    threads = args.threads or max(1, (os.cpu_count() or 2) - 1)
    torch.set_num_threads(threads)
    rows = []
    if not args.skip_ingest:
        rows.append(bench_ingest(args.channels, args.block, args.seconds, args.sample_rate))
        _say(rows[-1], args)
        if args.zmq:
            rows.append(bench_ingest_zmq(args.channels, args.block, args.seconds, args.sample_rate))
            _say(rows[-1], args)
    with tempfile.TemporaryDirectory(prefix="bench-ephys-") as wd:
        for spec in args.models:
            for be in args.backends:
                try:
                    rows.append(bench_model(spec, be, args.channels, args.block, args.seconds, args.budget,
                                            args.sample_rate, threads, wd))
                except Exception as exc:  # a backend missing here is a row, not a crash
                    rows.append({"model": spec, "backend": be, "error": str(exc).splitlines()[0][:200]})
                _say(rows[-1], args)
    meta = {"cpu_count": os.cpu_count(), "threads": threads, "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    if args.json:
        print(json.dumps({"meta": meta, "results": rows}, indent=1))
    else:
        print(_md(rows))
        print(f"\n{meta}")
    return 0


def _say(row: dict, args) -> None:
    if not args.json:
        print(f"bench ephys: {json.dumps(row)}", file=sys.stderr, flush=True)
