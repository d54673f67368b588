"""`livedenoise sidecar openephys` in a real subprocess: a fault that ends reception ends the process, non-zero,
with one clear line, and its heartbeats stop (the GUI must not show a deaf sidecar as connected)."""

import json
import os
import subprocess
import sys

import numpy as np

from oerig import Acquisition, Plugin, wait_for

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
         "--duration", "120", "--json"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert plugin.rep.first.wait(60), "no heartbeat from the sidecar"
        acq = Acquisition(plugin, 4)
        for b in range(5):
            acq.block(b * 256, 256, pace=0.02)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=90)
    finally:
        proc.kill()
    beats = plugin.rep.count
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
