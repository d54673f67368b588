"""Owns reading what is already waiting on a ZeroMQ socket: the receivers' drain step (sources/frames.py,
sources/openephys.py), both in their loop and at a graceful stop (raw data already received is never dropped)."""

from __future__ import annotations

import math
import time
from typing import Callable

import zmq


def take_waiting(sock: zmq.Socket, handle: Callable[[list[bytes]], None], seconds: float = math.inf,
                 limit: int | None = None) -> int:
    """Hand each multipart message already queued on `sock` to `handle(parts)`, without waiting for more.

    Stops when the queue is empty, after `limit` messages, or once `seconds` have passed (a publisher that
    keeps sending would otherwise keep the caller here). Returns how many messages were handled.
    """
    deadline = time.monotonic() + seconds
    n = 0
    while limit is None or n < limit:
        try:
            parts = sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            break
        handle(parts)
        n += 1
        if time.monotonic() >= deadline:
            break
    return n
