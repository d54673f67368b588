"""The live service (stream/service.py): what a graceful stop does with what has already arrived."""

import threading

import numpy as np
import zmq
from streamkit import MeanEngine, frame_parts, lite_card

from livedenoise.stream.loopback import free_endpoints
from livedenoise.stream.replay import open_publisher, wait_for_subscriber
from livedenoise.stream.service import ServeConfig, Service
from livedenoise.stream.sinks.recorder import read_recording
from livedenoise.stream.sources.frames import FrameReceiver


class DeafReceiver(FrameReceiver):
    """Reads nothing until the service stops: every message sent meanwhile waits in the SUB socket."""

    def _body(self):
        self.stop.wait()
        super()._body()  # stop is set: only what a stop does with the socket's queue is left


class DeafReceiverService(Service):
    def _make_receiver(self):
        return DeafReceiver(self.sub, self.table, self.stats, self._recv_stop, on_fatal=self._on_fatal,
                            max_restarts=self.cfg.max_restarts)


def test_a_graceful_stop_takes_the_frames_already_queued_in_the_input_socket(tmp_path):
    """Raw data is never dropped: frames that reached the service's socket before the stop are received,
    recorded and denoised, even though the receiver had not read them yet."""
    ctx = zmq.Context()
    endpoint = "inproc://livedenoise-test-service-queued"  # inproc: once send returns, the message is queued
    pub = open_publisher(ctx, endpoint)
    cfg = ServeConfig(input=endpoint, output=free_endpoints(1)[0], record=str(tmp_path / "rec"), stats_interval=0.2)
    stop = threading.Event()
    svc = DeafReceiverService(cfg, MeanEngine(lite_card(2, 0)), stop, ctx=ctx)
    result: dict = {}
    th = threading.Thread(target=lambda: result.update(svc.run()), daemon=True)
    th.start()
    n = 40
    try:
        assert wait_for_subscriber(pub, 120), "the service never subscribed"
        for k in range(n):
            pub.send_multipart(frame_parts(k, np.full((8, 10), k, np.int16)))
        assert svc.stats.frames_in == 0  # nothing read yet: all of them wait in the socket
        stop.set()
        th.join(120)
        assert not th.is_alive(), "the service did not stop"
    finally:
        stop.set()
        pub.close(linger=0)
        th.join(120)
        ctx.term()
    assert result["frames_in"] == n and result["malformed"] == 0
    assert result["frames_out"] == n and result["overflow"] == result["skipped"] == 0
    assert list(read_recording(tmp_path / "rec" / "raw_c1_p1_a001.h5")["frame"]) == list(range(n))
    assert list(read_recording(tmp_path / "rec" / "denoised_c1_p1_a001.h5")["frame"]) == list(range(n))
