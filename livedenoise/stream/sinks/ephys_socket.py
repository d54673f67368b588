"""Owns output back into the Open Ephys GUI through its Ephys Socket plugin (we are the TCP server).

The GUI's Ephys Socket source is a TCP *client* to localhost:<port> (default
9001); we are the server. Every packet is a 22-byte little-endian header
`struct '<iihiii'`: offset (0), num_bytes, depth (5 = F32), element_size (4),
num_channels, num_samples; then float32 data channel-major [channels][samples].
The header never changes within a connection, so output is re-chunked into
packets of exactly `packet_samples` samples. Each client has its own sender
thread and a bounded queue: a slow or vanished GUI never stalls the sidecar
(its packets are dropped and counted), and a GUI may connect late, disconnect
and reconnect at any time (it gets packets from the next one on).
"""

from __future__ import annotations

import logging
import queue
import select
import socket
import struct
import threading
import time

import numpy as np

from livedenoise.stream.health import SupervisedThread, ThreadHealth

log = logging.getLogger("livedenoise.stream.openephys")

HEADER = struct.Struct("<iihiii")
DEPTH_F32 = 5
DEFAULT_PORT = 9001
MAX_CLIENTS = 16
"""Clients served at a time (the GUI is one; more are refused and counted)."""
MAX_CLIENT_BYTES = 1 << 16
"""Bytes a client may send (the protocol is one-way: all ignored) before it is disconnected."""


def pack_header(n_channels: int, n_samples: int) -> bytes:
    return HEADER.pack(0, n_channels * n_samples * 4, DEPTH_F32, 4, n_channels, n_samples)


def read_packet(sock: socket.socket) -> tuple[tuple, np.ndarray]:
    """Client side, as the GUI does it: header, then num_bytes of data. Returns (header, (channels, samples))."""
    head = _recv_exact(sock, HEADER.size)
    offset, num_bytes, depth, elem, nch, nsamp = HEADER.unpack(head)
    if (depth != DEPTH_F32 or elem != 4 or not 0 < nch <= 4096 or not 0 < nsamp <= 1 << 20
            or num_bytes != nch * nsamp * elem):
        raise ValueError(f"unexpected Ephys Socket header {(offset, num_bytes, depth, elem, nch, nsamp)}")
    data = np.frombuffer(_recv_exact(sock, num_bytes), "<f4").reshape(nch, nsamp)
    return (offset, num_bytes, depth, elem, nch, nsamp), data


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("server closed the connection")
        buf += chunk
    return bytes(buf)


class _Client(threading.Thread):
    def __init__(self, conn: socket.socket, addr, server: "EphysSocketServer", max_queue: int):
        super().__init__(name=f"ephys-socket-{addr}", daemon=True)
        self.conn, self.addr, self.server = conn, addr, server
        self.q: queue.Queue = queue.Queue(max_queue)
        self.alive = True
        self.received = 0
        """Bytes this client sent us (the protocol is one-way: all of it is ignored)."""

    def send(self, packet: bytes) -> bool:
        if not self.alive:
            return False
        try:
            self.q.put_nowait(packet)
            return True
        except queue.Full:
            return False

    def run(self) -> None:
        try:
            while self.alive:
                pkt = self.q.get()
                if pkt is None:
                    break
                self.conn.sendall(pkt)
        except OSError as exc:
            log.info("Ephys Socket client %s disconnected (%s)", self.addr, exc)
        except Exception as exc:  # noqa: BLE001 -- one client's failure is counted, never the server's end
            self.server.health.record(exc, f"client {self.addr}: ")
            log.exception("Ephys Socket client %s: unexpected error", self.addr)
        finally:
            self.alive = False
            try:
                self.conn.close()
            except OSError:
                pass
            self.server._gone(self)

    def close(self) -> None:
        self.alive = False
        try:
            self.q.put_nowait(None)
        except queue.Full:
            pass
        try:
            self.conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class EphysSocketServer:
    """TCP server feeding any number of Ephys Socket clients with fixed-size float32 packets.

    The protocol is one-way: a client (the GUI) sends nothing. Whatever a
    client does send is read and ignored, counted in `client_bytes`; a client
    that sends more than `MAX_CLIENT_BYTES` is disconnected (`bad_clients`);
    at most `MAX_CLIENTS` clients at a time (more are refused: `refused`); a
    client that closes its side is let go at once. The accept/read loop runs
    on a supervised thread (`health`): an unexpected error restarts it with a
    fresh listening socket on the same port.
    """

    def __init__(self, port: int = DEFAULT_PORT, host: str = "127.0.0.1", packet_samples: int | None = None,
                 max_queue: int = 256, on_fatal=None):
        self.host, self.port = host, int(port)
        self.packet_samples = packet_samples
        self.max_queue = max_queue
        self.n_channels: int | None = None
        self.clients: list[_Client] = []
        self.lock = threading.Lock()
        self.buf: np.ndarray | None = None
        self.fill = 0
        self.packets = self.dropped_packets = self.connections = 0
        self.client_bytes = self.bad_clients = self.refused = 0
        self.sock: socket.socket | None = self._listen()
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self.health = ThreadHealth("ephys-socket")
        self.thread = SupervisedThread("ephys-socket", self._serve, self._stop, cleanup=self._close_listener,
                                       on_fatal=on_fatal, health=self.health)
        self.thread.start()

    def _listen(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(8)
            sock.setblocking(False)
        except Exception:
            sock.close()
            raise
        return sock

    def _close_listener(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    def counters(self) -> dict:
        return {"socket_clients": self.n_clients, "socket_packets": self.packets,
                "socket_dropped_packets": self.dropped_packets, "socket_connections": self.connections,
                "socket_client_bytes": self.client_bytes, "socket_bad_clients": self.bad_clients,
                "socket_refused": self.refused}

    def _serve(self) -> None:
        if self.sock is None or self.sock.fileno() < 0:  # restarted after an error: listen again on the same port
            self._close_listener()
            self.sock = self._listen()
        lsock = self.sock
        try:
            while not self._stop.is_set():
                lfd = lsock.fileno()
                if lfd < 0:
                    raise OSError("the listening socket was closed")
                with self.lock:
                    clients = {c.conn.fileno(): c for c in self.clients if c.alive}
                clients.pop(-1, None)  # closed meanwhile: its thread is ending
                poller = select.poll()  # not select(): file descriptors may be above 1024
                poller.register(lfd, select.POLLIN)
                for fd in clients:
                    poller.register(fd, select.POLLIN)
                for fd, ev in poller.poll(200):
                    if fd == lfd:
                        if ev & (select.POLLERR | select.POLLNVAL):
                            raise OSError("the listening socket failed")
                        self._accept(lsock)
                    elif fd in clients:
                        self._read(clients[fd])
        except BaseException:
            self._close_listener()
            raise

    def _accept(self, lsock: socket.socket) -> None:
        try:
            conn, addr = lsock.accept()
        except (BlockingIOError, InterruptedError):
            return
        conn.setblocking(True)
        with self.lock:
            full = len(self.clients) >= MAX_CLIENTS
        if full:
            self.refused += 1
            conn.close()
            log.warning("Ephys Socket: refused a client from %s:%s (%d clients already)", addr[0], addr[1], MAX_CLIENTS)
            return
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        c = _Client(conn, addr, self, self.max_queue)
        with self.lock:
            self.clients.append(c)
            self.connections += 1
        c.start()
        log.info("Ephys Socket client connected from %s:%s", *addr[:2])

    def _read(self, c: _Client | None) -> None:
        """A client sent something (or closed): count and ignore it; let go of one that closed or floods."""
        if c is None:
            return
        try:
            data = c.conn.recv(65536, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            c.close()  # the client closed its side
            return
        c.received += len(data)
        self.client_bytes += len(data)
        if c.received > MAX_CLIENT_BYTES:
            self.bad_clients += 1
            log.warning("Ephys Socket client %s sent %d bytes (the protocol is one-way): disconnected", c.addr, c.received)
            c.close()

    def _gone(self, c: _Client) -> None:
        with self.lock:
            if c in self.clients:
                self.clients.remove(c)

    @property
    def n_clients(self) -> int:
        with self.lock:
            return len(self.clients)

    def configure(self, n_channels: int, packet_samples: int) -> None:
        """Fix the packet shape; a different shape closes the connections (the GUI reconnects)."""
        if self.n_channels == n_channels and self.buf is not None and (self.packet_samples or packet_samples) == self.buf.shape[1]:
            return
        if self.n_channels is not None:
            self.reset_connections()
        self.n_channels = n_channels
        self.packet_samples = self.packet_samples or packet_samples
        self.buf = np.zeros((n_channels, self.packet_samples), np.float32)
        self.fill = 0
        self.header = pack_header(n_channels, self.packet_samples)

    def reset_connections(self) -> None:
        with self.lock:
            clients = list(self.clients)
        for c in clients:
            c.close()

    def write(self, block: np.ndarray) -> None:
        """(samples, channels) float32 µV, in order; sends every full packet."""
        if self.buf is None:
            self.configure(block.shape[1], self.packet_samples or block.shape[0])
        x = block.T  # (channels, samples)
        s = self.packet_samples
        i = 0
        n = x.shape[1]
        while i < n:
            k = min(s - self.fill, n - i)
            self.buf[:, self.fill:self.fill + k] = x[:, i:i + k]
            self.fill += k
            i += k
            if self.fill == s:
                self._send(self.header + self.buf.tobytes())
                self.fill = 0

    def _send(self, pkt: bytes) -> None:
        self.packets += 1
        with self.lock:
            clients = list(self.clients)
        for c in clients:
            if not c.send(pkt):
                self.dropped_packets += 1

    def close(self, flush_s: float = 2.0) -> None:
        """Stop serving; each client first gets what is queued for it (up to `flush_s` s in all)."""
        self._stop.set()
        self.thread.join(2.0)
        self._close_listener()
        with self.lock:
            clients = list(self.clients)
        end = time.monotonic() + flush_s
        for c in clients:
            try:
                c.q.put(None, timeout=max(0.0, end - time.monotonic()))  # after the packets already queued
            except queue.Full:
                pass
        for c in clients:
            c.join(max(0.0, end - time.monotonic()))
        self.reset_connections()
