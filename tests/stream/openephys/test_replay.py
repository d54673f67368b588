"""`replay openephys` holds the first block until a client's subscription to the data has arrived."""

import json
import threading
import time

import zmq

from livedenoise.io.readers_ephys import open_recording
from livedenoise.stream.loopback import free_port
from livedenoise.stream.openephys.replay import OpenEphysReplay


def test_a_late_subscriber_that_never_heartbeats_gets_every_block_from_the_first(small_recording):
    rec = open_recording(small_recording)
    port = free_port(span=2)
    rp = OpenEphysReplay(rec, port, block=1000, speed=0, wait=600)
    result = {}
    th = threading.Thread(target=lambda: result.update(rp.run()), daemon=True)
    th.start()
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    try:
        time.sleep(0.5)
        assert rp.sent_blocks == 0  # nobody has subscribed: the replay holds its data
        sub.setsockopt(zmq.SUBSCRIBE, b"DATA")
        sub.connect(f"tcp://127.0.0.1:{port}")
        got = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and (th.is_alive() or sub.poll(500)):
            if sub.poll(100):
                got.append(sub.recv_multipart())
        th.join(60)
        assert not th.is_alive()
    finally:
        rp.close()
        sub.close(0)
        ctx.term()
    blocks = -(-rec.n_samples // 1000)
    assert result["messages"] == len(got) == blocks * rec.n_channels
    assert [json.loads(m[1])["message_num"] for m in got] == list(range(len(got)))  # from the very first
    assert rp.rep.count == 0  # no heartbeat was needed


def test_stopping_a_replay_that_waits_for_its_subscriber_returns_at_once(small_recording):
    rp = OpenEphysReplay(open_recording(small_recording), free_port(span=2), block=1000, speed=0, wait=600)
    result = {}
    th = threading.Thread(target=lambda: result.update(rp.run()), daemon=True)
    th.start()
    time.sleep(0.3)
    rp.stop()
    th.join(60)
    rp.close()
    assert not th.is_alive() and result["blocks"] == 0


def test_nobody_subscribing_within_the_wait_is_said_and_the_data_still_goes_out(small_recording, caplog):
    rec = open_recording(small_recording)
    rp = OpenEphysReplay(rec, free_port(span=2), block=1000, speed=0, wait=0.3)
    with caplog.at_level("WARNING", logger="livedenoise.stream.openephys"):
        summary = rp.run()
    rp.close()
    assert summary["samples"] == rec.n_samples
    assert any("no client subscribed" in r.getMessage() and "--wait" in r.getMessage() for r in caplog.records)
