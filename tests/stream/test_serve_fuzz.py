"""Fuzz of a REAL `serve` (the service in a thread, real PUB/SUB sockets on loopback, real recording files).

Thousands of random and mutated messages (tests/stream/streamkit.hostile_message: random bytes, truncated,
deep and huge JSON, hostile literals, wrong types, huge ints, NaN, wrong payload sizes, mutations of valid
frame/start/stop messages) interleaved with valid frames, then valid frames only. Afterwards the service is
still receiving, `malformed + frames_in` equals what was delivered, no unexpected exception was needed to
get there (the receiver's health shows none), and every valid raw frame sent is in the raw recording.

Messages go out in chunks; each chunk is waited for (frames_in + malformed) before the next, so nothing is
lost to ZeroMQ's high-water marks and nothing depends on the machine's speed. Bounded: 3000 messages.
"""

import collections

import numpy as np
from streamkit import (  # noqa: F401
    MeanEngine, RawPublisher, RunningService, cfg_factory, delivered, frame_key, frame_parts, hostile_message,
    lite_card, raw_frames_recorded, valid_frame,
)

from livedenoise.stream.protocols.frames import FrameMessage, ProtocolError, decode

N_HOSTILE = 3000
CHUNK = 200


def test_thousands_of_hostile_messages_then_valid_frames(tmp_path, cfg_factory):
    rng = np.random.default_rng(12)
    cfg = cfg_factory(record=str(tmp_path / "rec"), ring=16, stats_interval=0.5)
    svc = RunningService(cfg, MeanEngine(lite_card(2, 0)))
    pub = RawPublisher(cfg.input)
    sent = collections.Counter()  # every valid frame delivered
    n_frames = n_bad = 0
    try:
        pub.wait_subscriber()
        plan = []
        for k in range(N_HOSTILE):
            plan.append(hostile_message(rng))
            if k % 10 == 0:
                plan.append(valid_frame(rng, 1000 + k, channel=7, plane=7))  # a steady stream of its own
        plan += [valid_frame(rng, 10**6 + k, channel=8, plane=1) for k in range(50)]
        for start in range(0, len(plan), CHUNK):
            for parts in plan[start:start + CHUNK]:
                if not delivered(parts):
                    continue  # ZeroMQ's SUB filter drops it before serve sees it
                try:
                    msg = decode(parts)
                except ProtocolError:
                    n_bad += 1
                else:
                    if isinstance(msg, FrameMessage):
                        n_frames += 1
                        sent[frame_key(msg)] += 1
                pub.send(parts)
            assert svc.wait_messages(n_frames + n_bad, timeout=60), "serve stopped receiving"
        # still receiving: a last valid frame arrives
        last = frame_parts(10**7, np.full((3, 3), 5, np.int16), channel=8, plane=1)
        sent[frame_key(decode(last))] += 1
        pub.send(last)
        n_frames += 1
        assert svc.wait_messages(n_frames + n_bad, timeout=60)
        final = svc.stop()
    finally:
        pub.close()
        if svc.thread.is_alive():
            svc.stop()
    assert n_bad > 1500 and n_frames > 400  # a real mix reached the service
    assert final["malformed"] == n_bad and final["frames_in"] == n_frames
    assert final["malformed"] + final["frames_in"] == n_bad + n_frames
    rx = final["threads"]["receiver"]
    assert rx["errors"] == 0 and rx["restarts"] == 0 and rx["state"] == "stopped", rx
    assert final["threads"]["engine"]["errors"] == 0 and final["record_errors"] == 0
    assert final["record_dropped"] == 0
    assert raw_frames_recorded(tmp_path / "rec") == sent  # every valid raw frame, nothing else
