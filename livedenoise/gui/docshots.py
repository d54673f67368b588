"""Regenerate the viewer screenshots in docs/img from simulated data over real sockets.

    QT_QPA_PLATFORM=offscreen python -m livedenoise.gui.docshots docs/img

Imaging: a simulated two-photon movie (`livedenoise.sim.imaging`) is
published on a loopback PUB at 30 Hz; a causal classic filter (half-Gaussian in
time, Gaussian in space; `livedenoise.models.nets.classic`, no training) denoises
each frame as it is published and the result goes out on a second PUB with the
output-side header fields and `stats` messages. ROIs sit on three simulated
neurons. Ephys: a simulated 384-channel Neuropixels recording
(`livedenoise.sim.ephys`) in ZMQ Interface format; the "denoised"
stream is the simulator's noise-free signal standing in for the sidecar's output.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import numpy as np


def _xpub():
    import zmq

    s = zmq.Context.instance().socket(zmq.XPUB)
    s.setsockopt(zmq.SNDHWM, 0)
    s.setsockopt(zmq.LINGER, 0)
    port = s.bind_to_random_port("tcp://127.0.0.1")
    return s, f"tcp://127.0.0.1:{port}"


def _wait_sub(sock, timeout=30.0):
    if not sock.poll(int(timeout * 1000)):
        raise TimeoutError("the viewer never subscribed")
    sock.recv()


def imaging(out: Path, frames: int = 180) -> None:  # past the mean-subtracted panel's 5 s warm-up (151 frames)
    import torch

    from livedenoise.gui.app import ViewOptions, run
    from livedenoise.models.nets.classic import build, classic_card
    from livedenoise.sim.imaging import simulate_movie
    from livedenoise.stream.protocols.frames import FrameHeader, encode_control, encode_frame

    sim = simulate_movie(frames=frames + 40, height=224, width=224, photons=1.5, seed=3, spike_rate=0.6)
    card = classic_card("halfgauss", pre=8, sigma_t=3.0, sigma_xy=1.0)
    net = build(card).eval()
    noisy = sim.noisy
    mean, std = float(noisy.mean()), float(noisy.std())
    active = np.argsort([-(d.max() - np.median(d)) for d in sim.dff])[:3]
    rois = []
    for k in active:
        ys, xs = np.nonzero(sim.masks[k])
        rois.append((int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)))

    raw_sock, raw_ep = _xpub()
    den_sock, den_ep = _xpub()
    stop = threading.Event()

    def publish():
        _wait_sub(raw_sock)
        _wait_sub(den_sock)
        lat = []
        t0 = time.monotonic()
        for i in range(len(noisy)):
            if stop.is_set():
                return
            hdr = FrameHeader(frame=i, t=i / 30.0, shape=noisy.shape[1:], dtype="int16", source="simulate")
            sent = time.perf_counter()
            raw_sock.send_multipart(encode_frame(hdr, noisy[i]))
            idx = card.window.source_indices(i, None)
            if idx is None:
                idx = np.full(len(card.window.offsets), i)
            win = (noisy[np.asarray(idx)].astype(np.float32) - mean) / std
            with torch.inference_mode():
                den = net(torch.from_numpy(win[None]))[0, 0].numpy() * std + mean
            ms = (time.perf_counter() - sent) * 1000
            lat.append(ms)
            dh = FrameHeader(frame=i, t=i / 30.0, shape=noisy.shape[1:], dtype="float32", source="simulate",
                             extra={"lag": 0, "latency_ms": round(ms, 3), "model": "classic-halfgauss"})
            den_sock.send_multipart(encode_frame(dh, den.astype(np.float32)))
            if i % 30 == 29:
                el = time.monotonic() - t0
                den_sock.send_multipart(encode_control("stats", {
                    "frames_in": i + 1, "frames_out": i + 1, "dropped_upstream": 0, "skipped": 0, "malformed": 0,
                    "fps_in": round((i + 1) / el, 2), "fps_out": round((i + 1) / el, 2),
                    "latency_ms_p50": round(float(np.percentile(lat, 50)), 2),
                    "latency_ms_p99": round(float(np.percentile(lat, 99)), 2),
                    "model": "classic-halfgauss", "backend": "torch", "lag": 0}))
            delay = t0 + (i + 1) / 30.0 - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    th = threading.Thread(target=publish, daemon=True)
    th.start()
    try:
        run(ViewOptions(raw=raw_ep, denoised=den_ep, screenshot=str(out), frames=frames, timeout=30,
                        rois=tuple(rois), size=(1700, 860)))
    finally:
        stop.set()
        th.join(5)
        raw_sock.close(0)
        den_sock.close(0)


def ephys(out: Path, seconds: float = 0.6) -> None:
    from livedenoise.gui.app import ViewOptions, run
    from livedenoise.sim.ephys import simulate_ephys_arrays
    from livedenoise.stream.protocols.zmq_interface import DataEncoder

    rate, block = 30000.0, 300
    n = int(seconds * rate) // block * block
    noisy, clean, _ = simulate_ephys_arrays(n_channels=384, n_samples=n, sample_rate=rate, seed=2)
    raw_sock, raw_ep = _xpub()
    den_sock, den_ep = _xpub()
    names = [f"CH{k + 1}" for k in range(384)]
    enc_raw, enc_den = DataEncoder("ProbeA-AP", names, rate), DataEncoder("ProbeA-AP", names, rate)
    stop = threading.Event()

    def publish():
        _wait_sub(raw_sock)
        _wait_sub(den_sock)
        for a in range(0, n, block):
            if stop.is_set():
                return
            for parts in enc_raw.encode_block(a, noisy[a:a + block].T):
                raw_sock.send_multipart(parts)
            for parts in enc_den.encode_block(a, clean[a:a + block].T):
                den_sock.send_multipart(parts)
            time.sleep(0.002)

    th = threading.Thread(target=publish, daemon=True)
    th.start()
    try:
        run(ViewOptions(raw=raw_ep, denoised=den_ep, ephys=True, screenshot=str(out), frames=(n // block) * 384,
                        timeout=30, window_s=0.5, first_channel=100, n_channels=24, gain=150.0, size=(1700, 950)))
    finally:
        stop.set()
        th.join(5)
        raw_sock.close(0)
        den_sock.close(0)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    folder = Path(argv[0] if argv else "docs/img")
    folder.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    imaging(folder / "viewer-imaging.png")
    ephys(folder / "viewer-ephys.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
