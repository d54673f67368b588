"""`livedenoise sidecar openephys` in a real subprocess: a fault that ends reception ends the process, non-zero,
with one clear line, and its heartbeats stop (the GUI must not show a deaf sidecar as connected)."""

import json
import os
import subprocess
import sys

import time

import numpy as np
import zmq

from oerig import Acquisition, Plugin, settled, wait_for

DRIVER = """
import sys, threading, zmq
from livedenoise.cli import main

def tear_down():  # a line on stdin: the messaging layer under the sidecar's sockets goes away
    sys.stdin.readline()
    zmq.Context.instance().term()

threading.Thread(target=tear_down, daemon=True).start()
sys.exit(main(sys.argv[1:]))
"""


def test_the_command_exits_non_zero_with_one_line_when_reception_cannot_go_on(tiny_models, ports, tmp_path):
    data_port, out_port = ports
    plugin = Plugin(data_port)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, "sidecar", "openephys", "--model", str(tiny_models["block-ephys"]),
         "--backend", "torch", "--input", f"tcp://127.0.0.1:{data_port}", "--socket-port", "-1",
         "--zmq-output", f"tcp://127.0.0.1:{out_port}", "--record", str(tmp_path / "rec"), "--stats-every", "0",
         "--duration", "600", "--json"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    out_sub = zmq.Context.instance().socket(zmq.SUB)
    try:
        assert plugin.wait_subscribed(300), "the sidecar never subscribed"
        assert plugin.rep.first.wait(300), "no heartbeat from the sidecar"
        out_sub.setsockopt(zmq.SUBSCRIBE, b"")
        out_sub.connect(f"tcp://127.0.0.1:{out_port}")
        acq = Acquisition(plugin, 4)
        b, deadline = 0, time.monotonic() + 300
        while not out_sub.poll(100) and time.monotonic() < deadline:  # until denoised data comes out
            acq.block(b * 256, 256)
            b += 1
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
        out_sub.close(0)
    beats = settled(lambda: plugin.rep.count)  # the process is gone; a heartbeat it sent may still be answered
    assert proc.returncode == 1, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert lines[-1].startswith("livedenoise sidecar: fatal: ") and "cannot go on" in lines[-1], lines[-3:]
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["fatal"] and "failed" in {t["state"] for t in stats["threads"].values()}
    assert stats["samples_in"] > 0 and stats["unprocessed_samples"] == 0  # what it had received was processed
    assert stats["processed_samples"] == stats["samples_in"]
    assert not wait_for(lambda: plugin.rep.count > beats, 3)  # nobody is heartbeating any more
    plugin.close()
    assert np.isfinite(stats["uptime_s"])
