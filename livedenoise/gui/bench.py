"""Does the viewer keep up? Publish fast streams at it and count frames received vs drawn.

    QT_QPA_PLATFORM=offscreen python -m livedenoise.gui.bench

For each case a PUB sends raw and denoised frames (and a stats message per
second) at a fixed rate for a few seconds over loopback; the imaging window
runs its normal 60 Hz display timer with one ROI. Printed per case: frames
sent, frames counted by the viewer (every one, or the gap count says how many
were lost), display updates drawn, and the drawn rate.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import numpy as np

CASES = [  # (height, width, rate Hz, seconds)
    (512, 512, 30.0, 4.0),
    (256, 256, 200.0, 4.0),
    (64, 64, 1000.0, 4.0),
]


def run_case(h: int, w: int, rate: float, seconds: float) -> dict:
    import zmq

    from livedenoise.gui.app import qt_app
    from livedenoise.gui.imaging import ImagingWindow
    from livedenoise.gui.sources import ZmqFrameSource
    from livedenoise.stream.protocols.frames import FrameHeader, encode_frame

    app = qt_app()
    ctx = zmq.Context.instance()
    socks = []
    eps = []
    for _ in range(2):
        s = ctx.socket(zmq.XPUB)
        s.setsockopt(zmq.SNDHWM, 0)
        s.setsockopt(zmq.LINGER, 0)
        eps.append(f"tcp://127.0.0.1:{s.bind_to_random_port('tcp://127.0.0.1')}")
        socks.append(s)
    raw, den = ZmqFrameSource("raw", eps[0], history=32), ZmqFrameSource("denoised", eps[1])
    win = ImagingWindow(raw, den)
    win.resize(1600, 900)
    win.add_roi(h // 4, h // 2, w // 4, w // 2)
    win.show()
    raw.start()
    den.start()
    for s in socks:
        s.poll(10000)
        s.recv()
    n = int(rate * seconds)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 1000, (h, w)).astype(np.int16)
    basef = base.astype(np.float32)
    done = threading.Event()

    def publish():
        t0 = time.perf_counter()
        for k in range(n):
            hdr = FrameHeader(frame=k, t=k / rate, shape=(h, w), dtype="int16")
            socks[0].send_multipart(encode_frame(hdr, base))
            dh = FrameHeader(frame=k, t=k / rate, shape=(h, w), dtype="float32",
                             extra={"lag": 0, "latency_ms": 1.0, "model": "bench"})
            socks[1].send_multipart(encode_frame(dh, basef))
            delay = t0 + (k + 1) / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        done.set()

    th = threading.Thread(target=publish, daemon=True)
    t_start = time.perf_counter()
    drawn0 = win.rendered
    th.start()
    while not done.is_set() or (time.perf_counter() - t_start < seconds + 3 and
                                den.status().frames + den.status().gaps < n):
        app.processEvents()
        time.sleep(0.002)
    elapsed = time.perf_counter() - t_start
    rs, ds = raw.status(), den.status()
    out = {"frame": f"{h}x{w}", "rate_hz": rate, "sent": n, "raw_counted": rs.frames, "raw_lost": n - rs.frames,
           "den_counted": ds.frames, "drawn": win.rendered - drawn0, "drawn_hz": round((win.rendered - drawn0) / elapsed, 1),
           "roi_points": len(win.roi_traces(0)["raw"][2]), "seconds": round(elapsed, 2)}
    win.close()
    win.deleteLater()
    app.processEvents()
    for s in socks:
        s.close(0)
    return out


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    cols = ["frame", "rate_hz", "sent", "raw_counted", "raw_lost", "den_counted", "roi_points", "drawn", "drawn_hz"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for case in CASES:
        r = run_case(*case)
        print("| " + " | ".join(str(r[c]) for c in cols) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
