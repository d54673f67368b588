"""take_waiting: what is already queued on a socket is handled, without waiting for more, within its bounds."""

import time

import zmq

from livedenoise.stream.sources.waiting import take_waiting


def _queued(n):
    ctx = zmq.Context()
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    pull.bind("inproc://waiting")
    push.connect("inproc://waiting")
    for k in range(n):
        push.send_multipart([b"m", str(k).encode()])
    deadline = time.monotonic() + 60
    while n and not pull.poll(0) and time.monotonic() < deadline:
        time.sleep(0.01)
    return ctx, pull, push


def _close(ctx, *socks):
    for s in socks:
        s.close(0)
    ctx.term()


def test_every_waiting_message_is_handled_in_order_and_an_empty_socket_returns_at_once():
    ctx, pull, push = _queued(5)
    try:
        got = []
        assert take_waiting(pull, got.append) == 5
        assert [int(p[1]) for p in got] == [0, 1, 2, 3, 4]
        t0 = time.monotonic()
        assert take_waiting(pull, got.append) == 0 and time.monotonic() - t0 < 30  # no wait for more
    finally:
        _close(ctx, pull, push)


def test_a_limit_or_a_deadline_leaves_the_rest_queued():
    ctx, pull, push = _queued(5)
    try:
        got = []
        assert take_waiting(pull, got.append, limit=2) == 2
        assert take_waiting(pull, got.append, seconds=0) == 1  # the deadline is looked at after each message
        assert take_waiting(pull, got.append) == 2
        assert [int(p[1]) for p in got] == [0, 1, 2, 3, 4]
    finally:
        _close(ctx, pull, push)
