"""`livedenoise demo`: the whole live pipeline on one machine, no GPU, no microscope.

simulate a movie -> model (the one shipped with the package, or `--train`) ->
ONNX export with parity check -> `serve` on onnxruntime CPU fed by `replay` at
the acquisition rate -> viewer if a display can open, else a live status line
-> recorded raw/denoised files and a summary PNG.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from importlib import resources
from pathlib import Path

import numpy as np

from livedenoise.errors import UserError

SHIPPED_MODEL = "demo-lite-post1.pt"


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="run the end-to-end live demo (simulated microscope -> live denoising -> summary)",
        description=(
            "Simulate a noisy two-photon movie, export the shipped model (or train one with --train) "
            "to ONNX, replay the movie at the acquisition rate into `livedenoise serve` on "
            "onnxruntime CPU, show the viewer when a display is available (else print a live status "
            "line), then write the recording and a summary PNG into --out."
        ),
    )
    p.add_argument("--out", default="demo_out", help="output folder (default: ./demo_out)")
    p.add_argument("--size", type=int, default=128, help="frame side in pixels (default 128)")
    p.add_argument("--frames", type=int, default=600, help="frames to stream (default 600: 20 s at 30 Hz)")
    p.add_argument("--fps", type=float, default=30.0, help="acquisition rate to replay at (default 30)")
    p.add_argument("--photons", type=float, default=1.0, help="photons per pixel per frame (default 1)")
    p.add_argument("--seed", type=int, default=2, help="simulation seed (the shipped model was trained on seed 1)")
    p.add_argument("--train", action="store_true", help="train a fresh model instead of using the shipped one")
    p.add_argument("--train-minutes", type=float, default=1.0, help="training budget with --train (default 1)")
    p.add_argument("--model", help="use this checkpoint (.pt) instead of the shipped model")
    p.add_argument("--backend", default="onnxruntime", help="engine backend for serve (default onnxruntime)")
    p.add_argument("--innovation", action=argparse.BooleanOptionalAction, default=True,
                   help="serve with the innovation step, which keeps calcium onsets at their frame (default on)")
    p.add_argument("--view", choices=["auto", "yes", "no"], default="auto",
                   help="open the live viewer: auto (when a display is available), yes, no")
    p.add_argument("--json", action="store_true", help="print the final summary as JSON")
    p.set_defaults(func=run)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _display_available() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) and \
        os.environ.get("QT_QPA_PLATFORM", "") not in ("offscreen", "minimal")


def _say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, flush=True)


def _shipped_model() -> Path | None:
    ref = resources.files("livedenoise") / "data" / SHIPPED_MODEL
    return Path(str(ref)) if ref.is_file() else None


def _get_model(args, out: Path, quiet: bool) -> Path:
    if args.model:
        return Path(args.model)
    shipped = None if args.train else _shipped_model()
    if shipped is not None:
        _say(f"[2/5] model: shipped {SHIPPED_MODEL} (trained by `livedenoise train`; --train to train your own)", quiet)
        return shipped
    from livedenoise.models.checkpoint import save_checkpoint
    from livedenoise.sim.imaging import SimConfig, simulate_movie
    from livedenoise.train.imaging import TrainConfig, train

    # the shipped model's recipe: the default imaging architecture and preset (interp2d lite), pre 8, post 1
    cfg = TrainConfig(pre=8, post=1, max_minutes=args.train_minutes,
                      steps=None, seed=0, progress=not quiet, sources=["demo simulation"]).resolved()
    _say(f"[2/5] model: training {cfg.arch} {cfg.preset} (pre 8, post 1) for {args.train_minutes:g} min "
         "on a second simulated movie", quiet)
    sim = simulate_movie(SimConfig(frames=1000, height=args.size, width=args.size, photons=args.photons, seed=args.seed + 100))
    card, state, _ = train([sim.noisy], cfg)
    return save_checkpoint(out / "model.pt", card, state)


def run(args: argparse.Namespace) -> int:
    from livedenoise.export.engines import open_engine
    from livedenoise.export.onnx_export import export_onnx
    from livedenoise.export.parity import check, limit_for, movie_windows
    from livedenoise.sim.imaging import SimConfig, save_simulation, simulate_movie
    from livedenoise.stream.protocols.frames import FrameMessage, decode
    from livedenoise.stream.replay import replay_movie
    from livedenoise.stream.report import find_recording, write_summary_png
    from livedenoise.stream.service import ServeConfig, run_service
    from livedenoise.stream.stats import stats_line

    if args.size < 16 or args.frames < 30 or args.fps <= 0:
        raise UserError("need --size >= 16, --frames >= 30 and --fps > 0")
    quiet = args.json
    t0 = time.perf_counter()
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out / "recording", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)

    _say(f"[1/5] simulating a {args.size}x{args.size}, {args.frames}-frame movie at {args.photons:g} photon/pixel/frame", quiet)
    sim = simulate_movie(SimConfig(frames=args.frames, height=args.size, width=args.size,
                                   photons=args.photons, frame_rate=args.fps, seed=args.seed))
    movie_path, _ = save_simulation(sim, out / "movie.tif")

    model = _get_model(args, out, quiet)
    onnx_path, card = export_onnx(model, out / "model.onnx", frame_shape=(args.size, args.size))
    torch_engine = open_engine(model, "torch")
    engine = open_engine(onnx_path, args.backend)
    windows, source = movie_windows(card, (args.size, args.size), sim.noisy[:64], n=8)
    parity = check(torch_engine, engine, windows, target=engine.backend, path=onnx_path,
                   limit=limit_for("onnx", "fp32"), source=source)
    _say(f"[3/5] exported {onnx_path} ({card.summary()}); parity vs torch: max rel err {parity.max_rel:.1e}", quiet)

    port_in, port_out = _free_port(), _free_port()
    endpoint_in, endpoint_out = f"tcp://127.0.0.1:{port_in}", f"tcp://127.0.0.1:{port_out}"
    stop = threading.Event()
    latencies: list[float] = []
    received = [0]
    listening = threading.Event()  # set once the collector's subscription has reached the service
    ctx = None

    def collect() -> None:  # what a downstream consumer sees: every denoised frame's latency
        import zmq

        nonlocal ctx
        ctx = zmq.Context.instance()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"frame")
        sub.setsockopt(zmq.SUBSCRIBE, b"stats")  # the service's first stats message proves we are subscribed
        sub.setsockopt(zmq.RCVTIMEO, 200)
        sub.connect(endpoint_out)
        while not stop.is_set():
            try:
                msg = decode(sub.recv_multipart(copy=True))
            except zmq.Again:
                continue
            listening.set()
            if not isinstance(msg, FrameMessage):
                continue
            latencies.append(float(msg.header.extra.get("latency_ms", np.nan)))
            received[0] += 1
        sub.close(linger=0)

    tty = sys.stdout.isatty()

    def on_stats(s: dict) -> None:
        if not quiet:  # one live line, rewritten in place on a terminal
            line = f"  live: {stats_line(s)}"
            print(f"\r{line}   " if tty else line, end="" if tty else "\n", flush=True)

    cfg = ServeConfig(model=str(onnx_path), backend=args.backend, input=endpoint_in, output=endpoint_out,
                      record=str(out / "recording"), max_batch=8, policy="all", innovation=args.innovation)
    final: dict = {}
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            final.update(run_service(cfg, engine, stop, on_stats))
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)
            stop.set()

    collector = threading.Thread(target=collect, daemon=True)
    server = threading.Thread(target=serve, daemon=True)
    collector.start()
    server.start()

    viewer = None
    if args.view == "yes" or (args.view == "auto" and _display_available()):
        viewer = subprocess.Popen([sys.executable, "-m", "livedenoise", "view", "--raw", endpoint_in,
                                   "--denoised", endpoint_out])
        _say(f"[4/5] viewer opened (pid {viewer.pid})", quiet)
    _say(f"[4/5] serving on {args.backend} ({engine.describe()}); replaying at {args.fps:g} Hz "
         f"{endpoint_in} -> {endpoint_out}" + ("" if viewer else " (no display: headless)"), quiet)
    try:
        if not listening.wait(15.0) and not errors:
            raise UserError(f"no stats from the service on {endpoint_out} within 15 s; see the log above")
        replayed = replay_movie(movie_path, endpoint_in, fps=args.fps, stop_event=stop, wait_s=10.0)
        deadline = time.perf_counter() + 15.0
        while received[0] < args.frames and time.perf_counter() < deadline and not errors:
            time.sleep(0.05)
    finally:
        stop.set()
        server.join(timeout=30)
        collector.join(timeout=5)
        if viewer is not None:
            viewer.terminate()
    if errors:
        raise errors[0]
    if not quiet and tty:
        print()

    files = find_recording(out / "recording")
    if files is None:
        raise UserError(f"the service wrote no recording into {out / 'recording'}; see the log above")
    png = out / "summary.png"
    numbers = write_summary_png(png, files, np.asarray(latencies), truth=sim, fps=args.fps,
                                title=f"livedenoise demo: {card.arch} lag {card.lag}{' + innovation' if args.innovation else ''} "
                                      f"on {engine.backend}")
    summary = {
        "frames_sent": replayed.get("frames"),
        "frames_denoised_received": received[0],
        "stats": {k: final.get(k) for k in ("frames_in", "frames_out", "dropped_upstream", "skipped",
                                            "malformed", "overflow", "latency_ms_p50", "latency_ms_p99",
                                            "engine_ms", "backend")},
        **numbers,
        "parity_max_rel": parity.max_rel,
        "files": {"movie": str(movie_path), "model": str(model), "onnx": str(onnx_path),
                  "raw": str(files.raw), "denoised": str(files.denoised), "summary_png": str(png)},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if args.json:
        print(json.dumps(summary, indent=2, default=float))
    else:
        print(f"[5/5] done in {summary['seconds']} s: {received[0]}/{args.frames} denoised frames received, "
              f"latency p50 {numbers.get('latency_ms_p50', float('nan')):.1f} ms / p99 "
              f"{numbers.get('latency_ms_p99', float('nan')):.1f} ms")
        if "psnr_raw" in numbers:
            print(f"      PSNR vs ground truth {numbers['psnr_raw']:.1f} -> {numbers['psnr_denoised']:.1f} dB; "
                  f"median trace r {numbers['trace_r_raw']:.2f} -> {numbers['trace_r_denoised']:.2f}"
                  + (f"; onset rise {numbers['onset_rise_raw']:.2f} -> {numbers['onset_rise_denoised']:.2f}"
                     if "onset_rise_raw" in numbers else ""))
        print(f"      summary {png}\n      recording {files.raw} and {files.denoised}")
    if received[0] < args.frames:
        print(f"livedenoise demo: warning: only {received[0]} of {args.frames} denoised frames arrived", file=sys.stderr)
        return 1
    return 0
