"""Free loopback ports: outside the range the OS gives to outgoing connections, never one that is taken."""

import socket
import time

import pytest
import zmq

from livedenoise.stream.loopback import LOWEST, ephemeral_range, free_endpoints, free_port


def test_ports_are_drawn_outside_the_ephemeral_range_and_all_of_a_span_is_free():
    lo, hi = ephemeral_range()
    assert 1024 <= lo <= hi <= 65535
    room_outside = lo - LOWEST >= 1000 or 65535 - hi >= 1000  # else the whole range is ephemeral
    for _ in range(20):
        p = free_port(span=3)
        if room_outside:
            assert all(q >= LOWEST and not lo <= q <= hi for q in (p, p + 1, p + 2)), (p, lo, hi)
        for q in (p, p + 1, p + 2):
            with socket.socket() as s:
                s.bind(("127.0.0.1", q))


def test_a_port_in_use_is_never_returned():
    base = free_port(span=4)
    held = []
    try:
        for q in (base, base + 1, base + 3):  # only base + 2 is free in [base, base + 4)
            s = socket.socket()
            s.bind(("127.0.0.1", q))
            held.append(s)
        assert {free_port(low=base, high=base + 4) for _ in range(20)} == {base + 2}
        with pytest.raises(RuntimeError, match="no 2 free consecutive"):
            free_port(span=2, low=base, high=base + 4, tries=50)
    finally:
        for s in held:
            s.close()


def test_bad_spans_are_refused():
    with pytest.raises(ValueError, match="span"):
        free_port(span=0)
    with pytest.raises(ValueError, match="no room"):
        free_port(span=5, low=30000, high=30003)


def test_endpoints_are_distinct_and_a_server_binds_one_its_client_was_already_retrying_on():
    eps = free_endpoints(3)
    assert len(set(eps)) == 3 and all(e.startswith("tcp://127.0.0.1:") for e in eps)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RECONNECT_IVL, 10)  # retry often: many connection attempts before the bind
    sub.connect(eps[0])
    time.sleep(0.3)
    pub = ctx.socket(zmq.PUB)
    try:
        pub.bind(eps[0])
        got = None
        deadline = time.monotonic() + 30
        while got is None and time.monotonic() < deadline:
            pub.send(b"hello")
            if sub.poll(100):
                got = sub.recv()
        assert got == b"hello"
    finally:
        sub.close(0)
        pub.close(0)
        ctx.term()
