"""Fuzzing every message parser of the sidecar, live, against a real sidecar on loopback.

ZMQ Interface DATA and EVENT messages, heartbeat replies (from the plugin),
heartbeat requests (to the sidecar's ZMQ output) and Ephys Socket clients: a
seeded generator makes thousands of random and mutated messages, then valid
ones follow. The sidecar must still be receiving, the counts must add up
(every message received is counted once: malformed, valid, event or other
stream), no thread may have failed, and every valid raw block must be
recorded. Messages go out in bursts and the next burst waits until the
sidecar has counted the last one, so nothing is dropped by a queue and
nothing depends on the machine's speed.
"""

import json
import socket
import threading

import numpy as np
import pytest
import zmq

from livedenoise.stream.protocols.zmq_interface import (
    BAD_JSON_REPLY, DATA, EVENT, HEARTBEAT_REPLY, encode_data, encode_ttl, heartbeat,
)
from oeclients import SocketClient
from oerig import Acquisition, Plugin, check_all_recorded, start_sidecar, wait_for

C, N = 6, 256
STREAM = "ProbeA-AP"
LITERALS = [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"9" * 5000, str(2**63).encode(), b"-1", b"0", b"true",
            b"null", b'"x"', b"[]", b"{}", b"[" * 20 + b"]" * 20, b'"' + b"y" * 400 + b'"', b"4.5", b"1e-400",
            b"65537", b"4096", b"2e6", b"0.5", b"-0.0", b"3", b"30000"]
FIELDS = [b"message_num", b"type", b"data_size", b"timestamp", b"content", b"stream", b"channel_num",
          b"channel_name", b"num_samples", b"sample_num", b"sample_rate", b"spike"]


def _valid_data(rng, mnum):
    ch = int(rng.integers(0, C))
    return encode_data(mnum, STREAM, ch, f"CH{ch + 1}", int(rng.integers(0, 10**6)), 30000.0,
                       rng.standard_normal(int(rng.integers(1, 64))).astype(np.float32))


def _set_field(header: bytes, field: bytes, literal: bytes) -> bytes:
    """Replace the value of `"field": value` (a number or a string) with `literal`."""
    key = b'"' + field + b'": '
    i = header.find(key)
    if i < 0:
        return header
    j = i + len(key)
    k = j
    if header[j:j + 1] == b'"':
        k = header.index(b'"', j + 1) + 1
    elif header[j:j + 1] == b"{":
        k = header.index(b"}", j) + 1
    else:
        while k < len(header) and header[k:k + 1] not in (b",", b"}"):
            k += 1
    return header[:j] + literal + header[k:]


def fuzz_message(rng, i: int) -> list[bytes]:
    kind = int(rng.integers(0, 9))
    base = _valid_data(rng, int(rng.integers(0, 10**6)))
    if kind == 0:  # random frames (half of them behind an envelope the SUB subscribes to)
        parts = [rng.bytes(int(rng.integers(0, 120))) for _ in range(int(rng.integers(1, 5)))]
        if rng.random() < 0.5:
            parts[0] = [DATA, EVENT, b"DATA", b"EVENT"][int(rng.integers(0, 4))] + parts[0][:int(rng.integers(0, 3))]
        return parts
    if kind == 1:  # one field holds a hostile literal
        return [base[0], _set_field(base[1], FIELDS[int(rng.integers(len(FIELDS)))],
                                    LITERALS[int(rng.integers(len(LITERALS)))]), base[2]]
    if kind == 2:  # byte mutations of the header
        h = bytearray(base[1])
        for _ in range(int(rng.integers(1, 4))):
            j = int(rng.integers(0, len(h)))
            op = int(rng.integers(0, 3))
            if op == 0:
                h[j] = int(rng.integers(0, 256))
            elif op == 1:
                h[j:j] = rng.bytes(int(rng.integers(1, 4)))
            else:
                del h[j:j + int(rng.integers(1, 4))]
        return [base[0], bytes(h), base[2]]
    if kind == 3:  # payload size off by some bytes, or NaN in it
        p = base[2]
        if rng.random() < 0.3:
            x = np.frombuffer(p, "<f4").copy()
            x[int(rng.integers(0, len(x)))] = np.nan
            return [base[0], base[1], x.tobytes()]
        d = int(rng.integers(-4, 5)) or 1
        return [base[0], base[1], p[:len(p) + d] if d < 0 else p + rng.bytes(d)]
    if kind == 4:  # events, valid and mutated
        ev = encode_ttl(int(rng.integers(0, 10**6)), STREAM, int(rng.integers(0, 10**6)), 1, True)
        if rng.random() < 0.5:
            ev = [ev[0], _set_field(ev[1], FIELDS[int(rng.integers(len(FIELDS)))],
                                    LITERALS[int(rng.integers(len(LITERALS)))]), ev[2][:int(rng.integers(0, 12))]]
        if rng.random() < 0.2:
            ev = [EVENT, json.dumps({"message_num": i, "spike": {"stream": STREAM, "num_channels": 4}}).encode(),
                  rng.bytes(int(rng.integers(0, 400)))]
        return ev
    if kind == 5:  # envelopes and part counts
        env = [b"DATA", b"DATAX", b"", b"EVENT\0", b"data\0", DATA + b"\0"][int(rng.integers(0, 6))]
        parts = [env, base[1], base[2]]
        return parts[:int(rng.integers(1, 4))] + ([b"x"] if rng.random() < 0.2 else [])
    if kind == 6:  # big hostile headers (still below the socket's frame limit)
        return [[DATA, b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}", b""],
                [DATA, b'{"message_num": ' + b"9" * 50_000 + b"}", b""],
                [DATA, b'{"s": "' + b"z" * 70_000 + b'"}', b""],
                [DATA, b" " * 1000 + b"[" * 17 + b"]" * 17, b""]][int(rng.integers(0, 4))]
    if kind == 7:  # another stream, valid: counted, ignored
        return encode_data(int(rng.integers(0, 10**6)), "Other", 0, "CH1", 0, 30000.0, np.ones(8, np.float32))
    # the header is no object, or not UTF-8, or has junk after it
    return [DATA, [b"[1]", b"\xff\xfe{}", base[1] + b" x", b"", b"\x00" * 8][int(rng.integers(0, 5))], base[2]]


def delivered(parts) -> bool:
    """The sidecar's SUB subscribes to b"DATA" and b"EVENT": ZeroMQ itself drops anything else, unseen."""
    return parts[0].startswith(b"DATA") or parts[0].startswith(b"EVENT")


def _burst_until_counted(sc, plugin, messages, burst=250) -> int:
    """Send in bursts; each waits until the sidecar counted the last. Returns the messages it could receive."""
    total = 0
    for a in range(0, len(messages), burst):
        for parts in messages[a:a + burst]:
            plugin.send(parts)
        total += sum(delivered(p) for p in messages[a:a + burst])
        assert wait_for(lambda: sc.snapshot()["messages"] >= total, 120), (sc.snapshot()["messages"], total)
    return total


def _partition(s):
    return s["malformed"] + s["data_messages"] + s["events"] + s["other_stream"] + s["internal_errors"]


@pytest.mark.parametrize("channels", [None, C], ids=["learned", "given"])
def test_fuzz_data_and_event_messages_then_every_valid_block_is_recorded(channels, tiny_models, ports, tmp_path):
    data_port, _ = ports
    plugin = Plugin(data_port)
    sc = start_sidecar(tiny_models["block-ephys"], data_port, plugin, record=tmp_path / "rec", stream=STREAM,
                       channels=channels, idle_flush_s=30)
    try:
        rng = np.random.default_rng(2024)
        fuzz = [fuzz_message(rng, i) for i in range(3000)]
        received = _burst_until_counted(sc, plugin, fuzz)
        s = sc.snapshot()
        assert received > 2500 and s["messages"] == received and _partition(s) == received
        assert s["malformed"] > received // 2 and s["internal_errors"] == 0 and s["thread_errors"] == 0
        assert s["threads"]["openephys-receiver"]["state"] == "running" and s["fatal"] is None
        # then a valid acquisition (the plugin starts its numbering again)
        acq = Acquisition(plugin, C)
        for b in range(25):
            acq.block(5 * 10**9 + b * N, N)
        assert wait_for(lambda: sc.snapshot()["messages"] == received + 25 * C, 120)
        stats = sc.stop()
    finally:
        plugin.close()
    assert plugin.sent == 3000 + 25 * C
    assert stats["messages"] == received + 25 * C and _partition(stats) == stats["messages"]
    assert stats["internal_errors"] == 0 and stats["thread_errors"] == 0 and stats["thread_restarts"] == 0
    assert stats["fatal"] is None and stats["unprocessed_samples"] == 0
    assert sum(stats["malformed_reasons"].values()) == stats["malformed"]
    check_all_recorded(tmp_path / "rec", acq.sent)


class FuzzPluginRep(threading.Thread):
    """The plugin's heartbeat REP, answering every request with a random reply (a third of them valid)."""

    def __init__(self, ctx, endpoint, seed=7):
        super().__init__(daemon=True)
        self.sock = ctx.socket(zmq.REP)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(endpoint)
        self.rng = np.random.default_rng(seed)
        self.valid = self.bad = 0
        self.done = threading.Event()

    def reply(self):
        r = self.rng
        k = int(r.integers(0, 6))
        if k <= 1:
            return [HEARTBEAT_REPLY]
        return [[r.bytes(int(r.integers(0, 900)))], [BAD_JSON_REPLY], [HEARTBEAT_REPLY + b"!"], [HEARTBEAT_REPLY, b""],
                [b"", HEARTBEAT_REPLY], [HEARTBEAT_REPLY[:-1]]][int(r.integers(0, 6))]

    def run(self):
        while not self.done.is_set():
            if not self.sock.poll(50):
                continue
            self.sock.recv_multipart()
            rep = self.reply()
            self.sock.send_multipart(rep)
            if rep == [HEARTBEAT_REPLY]:
                self.valid += 1
            else:
                self.bad += 1
        self.sock.close(0)


def test_fuzz_heartbeat_replies_never_disturb_reception(tiny_models, ports, tmp_path):
    data_port, _ = ports
    ctx = zmq.Context.instance()
    plugin = Plugin(data_port, rep=False)
    rep = FuzzPluginRep(ctx, f"tcp://127.0.0.1:{data_port + 1}")
    rep.start()
    sc = start_sidecar(tiny_models["block-ephys"], data_port, plugin, record=tmp_path / "rec", heartbeat_s=0.005,
                       heartbeat_timeout_s=60.0, idle_flush_s=30)  # a loaded machine may stall a reply > 1 s
    try:
        assert wait_for(lambda: rep.valid + rep.bad >= 50, 60)
        acq = Acquisition(plugin, C)
        for b in range(12):
            acq.block(b * N, N, pace=0.02)
        assert wait_for(lambda: rep.valid + rep.bad >= 1000, 120)
        assert wait_for(lambda: sc.snapshot()["messages"] == plugin.sent, 60)
        stats = sc.stop()
    finally:
        rep.done.set()
        rep.join(5)
        plugin.close()
    assert stats["heartbeats"] == rep.valid + rep.bad
    assert stats["heartbeat_replies"] == rep.valid and stats["heartbeat_bad_replies"] == rep.bad
    assert stats["heartbeat_timeouts"] == 0 and stats["thread_errors"] == 0 and stats["fatal"] is None
    assert stats["messages"] == 12 * C and stats["malformed"] == 0
    check_all_recorded(tmp_path / "rec", acq.sent)


def _fuzz_request(rng):
    if rng.random() < 0.01:
        return [b'{"type": "heartbeat", "uuid": "' + b"u" * 200_000 + b'"}'], False  # larger than its limit
    k = int(rng.integers(0, 8))
    if k <= 2:
        return [heartbeat(f"uuid-{int(rng.integers(0, 10**9))}", "fuzz")], True
    return [[rng.bytes(int(rng.integers(0, 200)))],
            [json.dumps({"type": "heartbeat", "uuid": int(rng.integers(0, 99))}).encode()],
            [json.dumps({"type": "heartbeat"}).encode()],
            [heartbeat("x"), rng.bytes(5)],
            [b"{" * 40 + b"}" * 40 + rng.bytes(3)]][k - 3], False


def test_fuzz_heartbeat_requests_to_the_zmq_output(tiny_models, ports, tmp_path):
    data_port, out_port = ports
    sc = start_sidecar(tiny_models["block-ephys"], data_port, None, zmq_output=f"tcp://127.0.0.1:{out_port}")
    ctx = zmq.Context.instance()
    req = ctx.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.setsockopt(zmq.RCVTIMEO, 30_000)
    req.connect(f"tcp://127.0.0.1:{out_port + 1}")
    rng = np.random.default_rng(5)
    valid = invalid = 0
    try:
        for _ in range(2000):
            parts, ok = _fuzz_request(rng)
            req.send_multipart(parts)
            assert req.recv_multipart() == [HEARTBEAT_REPLY if ok else BAD_JSON_REPLY]
            valid += ok
            invalid += not ok
        s = sc.snapshot()
    finally:
        req.close(0)
        stats = sc.stop()
    assert s["heartbeats_in"] == valid and s["heartbeat_malformed"] == invalid
    assert s["heartbeat_clients"] <= 256 and s["threads"]["zmq-heartbeat-rep"]["errors"] == 0
    assert stats["fatal"] is None


def test_fuzz_ephys_socket_clients_never_disturb_the_gui(tiny_models, ports, tmp_path):
    data_port, _ = ports
    plugin = Plugin(data_port)
    sc = start_sidecar(tiny_models["block-ephys"], data_port, plugin, socket_port=0, socket_samples=N,
                       idle_flush_s=30)
    port = sc.socket.port
    good = SocketClient(port, timeout=300)  # the GUI (patient: no packet flows for a while)
    good.start()
    assert wait_for(lambda: sc.socket.n_clients == 1, 30)
    rng = np.random.default_rng(3)
    acq = Acquisition(plugin, C)
    sent_bytes = 0
    try:
        for i in range(60):  # clients that talk, hang up, half-close, or connect and vanish
            with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                for _ in range(int(rng.integers(0, 4))):
                    data = rng.bytes(int(rng.integers(1, 3000)))
                    c.sendall(data)
                    sent_bytes += len(data)
                if rng.random() < 0.3:
                    c.shutdown(socket.SHUT_WR)
        # (no data flows yet: a client that closes with packets unread resets its connection, and the
        # kernel may then discard what it had sent; that case comes next, counted by clients let go)
        assert wait_for(lambda: sc.socket.counters()["socket_client_bytes"] == sent_bytes, 60)
        for i in range(60):  # the same while packets flow
            with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                if rng.random() < 0.5:
                    c.sendall(rng.bytes(int(rng.integers(1, 3000))))
                if i % 6 == 0:
                    acq.block(i // 6 * N, N)
                    wait_for(lambda: sc.socket.packets >= i // 6 - 1, 30)
        assert wait_for(lambda: sc.socket.n_clients == 1, 60)
        flooders = []
        for _ in range(3):  # more than the protocol allows: disconnected
            c = socket.create_connection(("127.0.0.1", port), timeout=10)
            try:
                c.sendall(b"\xab" * 200_000)
            except OSError:
                pass
            flooders.append(c)
        assert wait_for(lambda: sc.socket.counters()["socket_bad_clients"] == 3, 60)
        crowd = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(20)]
        assert wait_for(lambda: sc.socket.counters()["socket_refused"] >= 5, 60)  # 16 at a time
        for c in crowd + flooders:
            c.close()
        assert wait_for(lambda: sc.socket.n_clients == 1, 60)  # only the GUI is left
        for b in range(10, 20):
            acq.block(b * N, N)
        assert wait_for(lambda: sc.snapshot()["messages"] == plugin.sent, 60)
        stats = sc.stop()
    finally:
        plugin.close()
    good.join(10)
    assert stats["thread_errors"] == 0 and stats["fatal"] is None and stats["socket_refused"] >= 5
    assert len(good.headers) == 1  # the header never changed for the GUI
    assert good.n == stats["output_samples"] // N * N == 20 * N  # every packet, in order
    assert np.isfinite(good.samples()).all()
