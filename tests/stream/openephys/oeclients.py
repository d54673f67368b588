"""Clients of the sidecar's outputs for the tests, as the GUI and a ZMQ Interface client read them."""

import socket
import threading

import numpy as np
import zmq

from livedenoise.stream.protocols.zmq_interface import decode
from livedenoise.stream.sinks.ephys_socket import read_packet


class SocketClient(threading.Thread):
    """Reads Ephys Socket packets as the GUI does; asserts the header never changes."""

    def __init__(self, port, stop_after=None, timeout=300.0):
        super().__init__(daemon=True)
        self.port, self.stop_after, self.timeout = port, stop_after, timeout
        self.blocks, self.headers = [], set()
        self.n = 0

    def run(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        try:
            while self.stop_after is None or self.n < self.stop_after:
                head, data = read_packet(s)
                self.headers.add(head)
                self.blocks.append(data.copy())
                self.n += data.shape[1]
        except (ConnectionError, OSError):
            pass
        finally:
            s.close()

    def samples(self):
        return np.concatenate(self.blocks, axis=1).T if self.blocks else np.zeros((0, 0), np.float32)


class ZmqClient(threading.Thread):
    def __init__(self, endpoint):
        super().__init__(daemon=True)
        self.sub = zmq.Context.instance().socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"DATA")
        self.sub.setsockopt(zmq.RCVHWM, 0)
        mon = self.sub.get_monitor_socket()
        self.sub.connect(endpoint)
        self.connected = self._wait_connected(mon, 120.0)
        self.sub.disable_monitor()
        mon.close(0)
        self.got, self.msgnums, self.done = {}, [], threading.Event()
        self.order: list[int] = []
        """Block sample numbers in arrival order (each once)."""

    @staticmethod
    def _wait_connected(mon, timeout):
        """Wait (up to `timeout` s) until the SUB's TCP handshake with the publisher is done."""
        import time

        from zmq.utils.monitor import recv_monitor_message

        end = time.monotonic() + timeout
        want = getattr(zmq, "EVENT_HANDSHAKE_SUCCEEDED", zmq.EVENT_CONNECTED)
        while time.monotonic() < end:
            if mon.poll(100) and recv_monitor_message(mon)["event"] == want:
                return True
        return False

    def run(self):
        while not self.done.is_set():
            if not self.sub.poll(100):
                continue
            m = decode(self.sub.recv_multipart())
            self.msgnums.append(m.message_num)
            if m.sample_num not in self.got:
                self.order.append(m.sample_num)
            self.got.setdefault(m.sample_num, {})[m.channel_num] = np.array(m.samples)
        self.sub.close(0)

    def n_samples(self, C) -> int:
        """Samples received on every one of the C channels."""
        return sum(len(next(iter(v.values()))) for v in list(self.got.values()) if len(v) == C)

    def samples(self, C):
        return np.concatenate([np.stack([self.got[k][c] for c in range(C)], 1) for k in sorted(self.got)])

    def stream(self, C):
        """(sample numbers, (samples, C) data) in arrival order (block sample numbers must be unique)."""
        blocks = [np.stack([self.got[k][c] for c in range(C)], 1) for k in self.order]
        sn = np.concatenate([np.arange(k, k + len(b)) for k, b in zip(self.order, blocks)])
        return sn, np.concatenate(blocks)
