"""`livedenoise demo`: the whole live pipeline on one machine, no GPU, no microscope.

simulate a movie -> model (the one shipped with the package, or `--train`) ->
ONNX export with parity check -> a measurement of the rate this machine
denoises at now -> `serve` on onnxruntime CPU fed by `replay` at the
acquisition rate, or slower when the machine cannot keep up (it says so) ->
viewer if a display can open, else a live status line -> a wait until every
frame sent has been denoised and recorded -> recorded raw/denoised files and a
summary PNG (missing frames, if any, are marked and the metrics say how many
frames they cover).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from importlib import resources
from pathlib import Path

import numpy as np

from livedenoise.errors import UserError
from livedenoise.stream.loopback import free_endpoints

SHIPPED_MODEL = "demo-fast-post1.pt"
PACE_SHARE = 0.6
"""Replay at most this share of the rate the model runs at alone: the rest of the pipeline (ZeroMQ, the
recorder, the replay and the collector in this same process) and a changing load need the remainder."""
STALL_S = 120.0
"""After the replay, how long the service may make no progress at all before the demo stops waiting."""


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="run the end-to-end live demo (simulated microscope -> live denoising -> summary)",
        description=(
            "Simulate a noisy two-photon movie, export the shipped model (or train one with --train) "
            "to ONNX, measure how fast this machine denoises, replay the movie at the acquisition rate "
            "(or slower, saying so, when the machine cannot keep up) into `livedenoise serve` on "
            "onnxruntime CPU, show the viewer when a display is available (else print a live status "
            "line), wait until every frame is denoised and recorded, then write the recording and a "
            "summary PNG into --out."
        ),
    )
    p.add_argument("--out", default="demo_out", help="output folder (default: ./demo_out)")
    p.add_argument("--size", type=int, default=128, help="frame side in pixels (default 128)")
    p.add_argument("--frames", type=int, default=600, help="frames to stream (default 600: 20 s at 30 Hz)")
    p.add_argument("--fps", type=float, default=30.0,
                   help="acquisition rate to replay at (default 30); slower when this machine cannot keep up")
    p.add_argument("--no-pace", dest="pace", action="store_false",
                   help="replay at --fps even when this machine cannot denoise that fast (frames queue; the "
                        "demo waits for all of them)")
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

    # the shipped model's recipe: what `train` builds with no --arch/--preset (interp2d fast, pre 16, post 1)
    cfg = TrainConfig(max_minutes=args.train_minutes, steps=None, seed=0, progress=not quiet,
                      sources=["demo simulation"]).resolved()
    _say(f"[2/5] model: training {cfg.arch} {cfg.preset} (pre {cfg.pre}, post {cfg.post}) for "
         f"{args.train_minutes:g} min on a second simulated movie", quiet)
    sim = simulate_movie(SimConfig(frames=1000, height=args.size, width=args.size, photons=args.photons, seed=args.seed + 100))
    card, state, _ = train([sim.noisy], cfg)
    return save_checkpoint(out / "model.pt", card, state)


def _measure_rate(engine, card, frames: np.ndarray, innovation: bool) -> tuple[float, int]:
    """(frames/s, frames timed): the model with the demo's settings on this machine now, one frame at a
    time as in a live stream (the same pipeline `serve` runs; after a warm-up; at least 1 s or 32 frames)."""
    from livedenoise.models.innovation import step_for
    from livedenoise.models.registry import min_frames
    from livedenoise.stream.offline import denoise_array

    step, _ = step_for(card, innovation)
    n = min(len(frames), max(32, min_frames(card)))
    denoise_array(engine, frames[:min(len(frames), max(8, min_frames(card)))], batch=1, innovation=step)  # warm-up
    done, t0 = 0, time.perf_counter()
    while True:
        denoise_array(engine, frames[:n], batch=1, innovation=step)
        done += n
        elapsed = time.perf_counter() - t0
        if elapsed >= 1.0 or done >= 256:
            return done / elapsed, done


def _ring_frames(frames: int, size: int) -> int:
    """A ring that holds the whole demo movie (within 256 MiB): a slow machine queues frames, never loses them."""
    return int(max(256, min(frames + 64, (256 << 20) // (size * size * 4))))


def run(args: argparse.Namespace) -> int:
    from livedenoise.export.engines import open_engine
    from livedenoise.export.onnx_export import export_onnx
    from livedenoise.export.parity import check, limit_for, movie_windows
    from livedenoise.sim.imaging import SimConfig, save_simulation, simulate_movie
    from livedenoise.stream.protocols.frames import FrameMessage, decode
    from livedenoise.stream.replay import replay_movie
    from livedenoise.stream.report import find_recording, write_summary_png
    from livedenoise.stream.service import ServeConfig, Service
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

    # pace: what this machine sustains now, not what an idle one would
    rate, timed = _measure_rate(engine, card, sim.noisy, args.innovation)
    fps = args.fps
    paced = bool(args.pace and PACE_SHARE * rate < args.fps)
    if paced:
        fps = max(0.5, float(f"{PACE_SHARE * rate:.2g}"))
        _say(f"[4/5] this machine denoises {rate:.0f} frames/s now (measured on {timed} frames): too slow for "
             f"{args.fps:g} Hz alongside the rest of the pipeline, so the demo replays at {fps:g} Hz "
             f"({PACE_SHARE:.0%} of that rate; --no-pace replays at {args.fps:g} Hz anyway)", quiet)
    else:
        _say(f"[4/5] this machine denoises {rate:.0f} frames/s now (measured on {timed} frames): "
             + (f"{args.fps:g} Hz keeps up" if PACE_SHARE * rate >= args.fps else
                f"{_short_of(rate, args.fps)}, replaying at {args.fps:g} Hz anyway (--no-pace): frames will queue "
                "and the demo waits for every one"), quiet)

    endpoint_in, endpoint_out = free_endpoints(2)
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
        sub.setsockopt(zmq.RCVHWM, 0)  # keep every frame however far behind this thread falls
        sub.setsockopt(zmq.SUBSCRIBE, b"frame")
        sub.setsockopt(zmq.SUBSCRIBE, b"stats")  # the service's first stats message proves we are subscribed
        sub.setsockopt(zmq.RCVTIMEO, 200)
        sub.connect(endpoint_out)
        while not collector_stop.is_set():
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
    last_line = [0.0]

    def on_stats(s: dict) -> None:
        if quiet or not s.get("frames_in"):
            return
        line = f"  live: {stats_line(s)}"
        if tty:  # one live line, rewritten in place
            print(f"\r{line}   ", end="", flush=True)
        elif time.monotonic() - last_line[0] >= 5.0:  # a plain line every 5 s in a log or a pipe
            last_line[0] = time.monotonic()
            print(line, flush=True)

    cfg = ServeConfig(model=str(onnx_path), backend=args.backend, input=endpoint_in, output=endpoint_out,
                      record=str(out / "recording"), max_batch=8, policy="all", innovation=args.innovation,
                      ring=_ring_frames(args.frames, args.size), sndhwm=0)
    service = Service(cfg, engine, stop, on_stats)
    final: dict = {}
    errors: list[BaseException] = []
    collector_stop = threading.Event()

    def serve() -> None:
        try:
            final.update(service.run())
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
    _say(f"[4/5] serving on {args.backend} ({engine.describe()}); replaying at {fps:g} Hz "
         f"{endpoint_in} -> {endpoint_out}" + ("" if viewer else " (no display: headless)"), quiet)
    waited = {"stalled": False}
    try:
        if not listening.wait(60.0) and not errors:
            raise UserError(f"no stats from the service on {endpoint_out} within 60 s; see the log above")
        replayed = replay_movie(movie_path, endpoint_in, fps=fps, stop_event=stop, wait_s=30.0)
        _wait_for_every_frame(service.stats, replayed.get("frames", 0), received, errors, waited, quiet, tty)
    finally:
        stop.set()
        _join(server, "the service (flushing the recording)", quiet)
        t_end = time.monotonic() + 30
        while received[0] < final.get("frames_out", 0) and time.monotonic() < t_end:
            time.sleep(0.05)  # the last denoised frames on their way to the collector
        collector_stop.set()
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
    sent = int(replayed.get("frames") or 0)
    numbers = write_summary_png(png, files, np.asarray(latencies), truth=sim, fps=args.fps, frames=sent,
                                title=f"livedenoise demo: {card.arch} lag {card.lag}{' + innovation' if args.innovation else ''} "
                                      f"on {engine.backend}, replayed at {fps:g} Hz"
                                      + (f" (paced down from {args.fps:g} Hz)" if paced else ""))
    complete = numbers["denoised_frames"] == sent and numbers["raw_frames"] == sent and received[0] == sent
    summary = {
        "frames_sent": sent,
        "frames_denoised_received": received[0],
        "frames_denoised_recorded": numbers["denoised_frames"],
        "frames_raw_recorded": numbers["raw_frames"],
        "complete": complete,
        "fps_asked": args.fps,
        "fps_replayed": fps,
        "fps_replay_achieved": replayed.get("fps"),
        "paced": paced,
        "measured_fps": round(rate, 1),
        "stats": {k: final.get(k) for k in ("frames_in", "frames_out", "dropped_upstream", "skipped",
                                            "malformed", "overflow", "drain_given_up", "latency_ms_p50",
                                            "latency_ms_p99", "engine_ms", "backend")},
        **numbers,
        "parity_max_rel": parity.max_rel,
        "files": {"movie": str(movie_path), "model": str(model), "onnx": str(onnx_path),
                  "raw": str(files.raw), "denoised": str(files.denoised), "summary_png": str(png)},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if args.json:
        print(json.dumps(summary, indent=2, default=float))
    else:
        _print_summary(summary, numbers, args, card, files, png)
    if not complete:
        print(f"livedenoise demo: warning: {sent - numbers['denoised_frames']} of {sent} frames were not denoised "
              f"(recorded {numbers['denoised_frames']}, received {received[0]})"
              + ("; the service stopped making progress" if waited["stalled"] else "")
              + "; the summary marks them and its metrics cover only the frames that were", file=sys.stderr)
        return 1
    return 0


def _wait_for_every_frame(stats, sent: int, received: list, errors: list, waited: dict, quiet: bool,
                          tty: bool) -> None:
    """Until the service has dealt with every frame sent (denoised, or counted as lost) and the collector has
    them: however long that takes while it makes progress; STALL_S without any progress ends the wait."""
    last = None
    since = note_at = time.monotonic()
    while not errors:
        done = stats.frames_out + stats.overflow + stats.skipped
        arrived = stats.frames_in + stats.dropped_upstream
        if done >= stats.frames_in and arrived >= sent and received[0] >= stats.frames_out:
            return
        now = time.monotonic()
        state = (done, stats.frames_in, received[0])
        if state != last:
            last, since = state, now
        elif now - since > STALL_S:
            waited["stalled"] = True
            _say(f"livedenoise demo: no progress for {STALL_S:.0f} s with {sent - done} frame(s) not denoised; "
                 "stopping", quiet)
            return
        if not tty and now - note_at >= 5.0:
            note_at = now
            _say(f"  replay done; waiting for the service: {stats.frames_out} of {sent} frames denoised, "
                 f"{max(0, stats.frames_in - done)} queued", quiet)
        time.sleep(0.05)


def _join(thread: threading.Thread, what: str, quiet: bool) -> None:
    """Join without a deadline that would cut a slow flush short, saying what it waits for every 10 s."""
    t0 = time.monotonic()
    while True:
        thread.join(10.0)
        if not thread.is_alive():
            return
        _say(f"  waiting for {what}: {time.monotonic() - t0:.0f} s", quiet)
        if time.monotonic() - t0 > 600:
            raise UserError(f"{what} did not finish within 10 minutes; see the log above")


def _short_of(rate: float, fps: float) -> str:
    return (f"slower than {fps:g} Hz" if rate < fps else
            f"too little headroom for {fps:g} Hz (pacing wants {fps / PACE_SHARE:.0f} frames/s)")


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _print_summary(summary: dict, numbers: dict, args, card, files, png) -> None:
    sent = summary["frames_sent"]
    if summary["paced"]:
        pace = (f"replayed at {summary['fps_replayed']:g} Hz, paced down from {args.fps:g} Hz because this machine "
                f"denoised {summary['measured_fps']:.0f} frames/s")
    elif PACE_SHARE * summary["measured_fps"] < args.fps:
        pace = (f"replayed at {args.fps:g} Hz (--no-pace; {summary['fps_replay_achieved']} frames/s achieved) although "
                f"this machine denoised {summary['measured_fps']:.0f} frames/s, "
                f"{_short_of(summary['measured_fps'], args.fps)}: frames queued, and the latency includes their wait")
    else:
        pace = f"replayed at {summary['fps_replayed']:g} Hz"
    print(f"[5/5] done in {summary['seconds']} s: {numbers['denoised_frames']}/{sent} frames denoised and recorded, "
          f"{summary['frames_denoised_received']}/{sent} received by a subscriber; {pace}")
    print(f"      latency p50 {numbers.get('latency_ms_p50', float('nan')):.1f} ms / p99 "
          f"{numbers.get('latency_ms_p99', float('nan')):.1f} ms (raw frame received -> denoised frame sent, "
          f"including the model's {card.lag}-frame lag)")
    if "psnr_raw" in numbers:
        cover = (f"all {numbers['metric_frames']} frames" if not numbers["partial"] else
                 f"PARTIAL: only the {numbers['metric_frames']} of {numbers['movie_frames']} frames denoised")
        print(f"      PSNR vs ground truth {numbers['psnr_raw']:.1f} -> {numbers['psnr_denoised']:.1f} dB; "
              f"median trace r {numbers['trace_r_raw']:.2f} -> {numbers['trace_r_denoised']:.2f} ({cover})")
    if "onset_rise_raw" in numbers and not np.isfinite(numbers["onset_rise_denoised"]):
        print("      onset rise: not measurable (no calcium onset in this movie)")
    elif "onset_rise_raw" in numbers:
        prof = numbers.get("rise_profile_denoised", {})
        around = ", ".join(f"{_pct(prof[o])} {name}" for o, name in ((-1, "on the frame before"), (1, "on the frame after"),
                                                                      (2, "two after")) if np.isfinite(prof.get(o, np.nan)))
        print(f"      onset rise: of a calcium onset's true rise, {_pct(numbers['onset_rise_denoised'])} shows at "
              f"its own frame in the denoised trace (raw: {_pct(numbers['onset_rise_raw'])}, all of it plus noise)"
              + (f"; around it: {around}" if around else ""))
    elif "psnr_raw" in numbers:
        print("      onset rise: not computed (it needs every frame from the first)")
    print(f"      summary {png}\n      recording {files.raw} and {files.denoised}")
