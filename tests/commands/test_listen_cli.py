"""`livedenoise listen` as a user runs it: a subprocess subscribed to a real PUB socket on loopback."""

import json
import subprocess
import sys
import threading
import time

import numpy as np
import zmq

from livedenoise.stream.loopback import free_endpoints
from livedenoise.stream.protocols.frames import FrameHeader, encode_control, encode_frame


def test_count_counts_frames_not_control_messages():
    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    endpoint = free_endpoints(1)[0]
    pub.bind(endpoint)
    proc = subprocess.Popen([sys.executable, "-m", "livedenoise", "listen", "--endpoint", endpoint,
                             "--count", "3", "--json", "--timeout", "120"], stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while not lines and time.monotonic() < deadline:  # until the subscriber has joined
            pub.send_multipart(encode_control("start", {"source": "test"}))
            time.sleep(0.1)
        assert lines, "listen never received a start message"
        for k in range(3):
            pub.send_multipart(encode_control("stats", {"frames_in": k}))
            h = FrameHeader(frame=k, t=k / 30, shape=(4, 5), dtype="uint16")
            pub.send_multipart(encode_frame(h, np.full((4, 5), k, np.uint16)))
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        pub.close(linger=0)
    reader.join(10)
    summary = json.loads(lines[-1])["summary"]
    assert summary["frames"] == 3 and summary["by_topic"]["frame"] == 3
    assert summary["by_topic"]["start"] >= 1 and summary["by_topic"]["stats"] >= 2
