"""Free loopback ports for the demo, the benchmarks and the tests.

The port is picked *outside* the operating system's ephemeral range (the ports it hands to outgoing
connections). A ZeroMQ client that connects before its server binds retries every 100 ms, each time
from an ephemeral source port; a port taken from that same range (`bind(("127.0.0.1", 0))`) can be
given to one of those attempts, or to the client's own attempt on it (a TCP self-connect, which Linux
allows on loopback), and the server's bind then fails with "Address already in use". Ports below the
ephemeral range are never handed out that way.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

LINUX_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
IANA_EPHEMERAL = (49152, 65535)  # the default elsewhere (macOS, Windows): RFC 6335
LOWEST = 20000  # above the registered ports our peers use (Open Ephys 5556/5557, ScanImage setups)


def ephemeral_range() -> tuple[int, int]:
    """(first, last) port the OS uses for outgoing connections: Linux's setting, else the IANA range."""
    try:
        lo, hi = (int(v) for v in LINUX_RANGE.read_text().split())
        return lo, hi
    except (OSError, ValueError):
        return IANA_EPHEMERAL


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(span: int = 1, low: int | None = None, high: int | None = None, tries: int = 500) -> int:
    """First port p of `span` consecutive ports (p .. p + span - 1) free on 127.0.0.1.

    Drawn at random from [low, high) (default: LOWEST up to the start of the ephemeral range, or above
    its end where the range starts low, else any unprivileged port). Random rather than sequential so that concurrent processes
    rarely draw the same port. Raises RuntimeError when `tries` draws find none free.
    """
    if span < 1:
        raise ValueError(f"span must be >= 1, got {span}")
    if low is None or high is None:
        lo, hi = ephemeral_range()
        if lo - LOWEST >= 1000:
            low, high = LOWEST, lo
        elif 65535 - hi >= 1000:
            low, high = hi + 1, 65536
        else:  # the whole range is ephemeral: draw from it and rely on the draw being random
            low, high = 1024, 65536
    if high - span < low:
        raise ValueError(f"no room for {span} ports in [{low}, {high})")
    rng = random.SystemRandom()
    for _ in range(tries):
        p = rng.randrange(low, high - span + 1)
        if all(_bindable(p + i) for i in range(span)):
            return p
    raise RuntimeError(f"no {span} free consecutive loopback port(s) in [{low}, {high}) after {tries} tries")


def free_endpoints(n: int = 1) -> list[str]:
    """n different 'tcp://127.0.0.1:PORT' endpoints on consecutive free ports (see `free_port`)."""
    p = free_port(span=n)
    return [f"tcp://127.0.0.1:{p + i}" for i in range(n)]
