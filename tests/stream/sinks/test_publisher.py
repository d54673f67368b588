"""The output PUB (stream/sinks/publisher.py) over a real loopback socket."""

import time

import zmq
from tests.stream.streamkit import endpoints

from livedenoise.stream.protocols.frames import decode
from livedenoise.stream.sinks.publisher import OutputPublisher


def test_a_control_message_beyond_the_header_limit_drops_its_largest_fields_and_stays_readable():
    _, o = endpoints()
    ctx = zmq.Context()
    pub = OutputPublisher(ctx, o)
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(o)
    try:
        paths = [f"/data/session/raw_c1_p1_a{k:03d}.h5" for k in range(5000)]  # a final stats' `recorded`, 150 KB
        deadline = time.monotonic() + 60
        while not sub.poll(50) and time.monotonic() < deadline:  # until the subscription has arrived
            pub.control("stats", {"frames_in": 3, "recorded": paths, "final": True})
        while sub.poll(200):
            msg = decode(sub.recv_multipart())  # receivers accept it: within the protocol's 64 KiB
        assert msg.meta["frames_in"] == 3 and msg.meta["final"] is True
        assert "recorded" not in msg.meta and msg.meta["recorded_omitted"] > 64 * 1024
    finally:
        pub.close()
        sub.close(linger=0)
        ctx.term()
