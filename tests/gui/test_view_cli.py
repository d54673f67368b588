"""`livedenoise view` as a real subprocess: screenshots from streams, no-data and no-display messages."""

import os
import subprocess
import sys
import threading
import time

import numpy as np
from gui_helpers import Publisher, frame, free_endpoint, stats

from livedenoise.cli import build_parser
from livedenoise.commands.view import EPHYS_DENOISED, EPHYS_RAW, options
from livedenoise.stream.protocols.zmq_interface import encode_data
from livedenoise.stream.protocols.frames import DEFAULT_INPUT, DEFAULT_OUTPUT


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env.update(extra)
    return env


def _view(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "livedenoise", "view", *args], capture_output=True, text=True,
                          timeout=timeout, env=env or _env(QT_QPA_PLATFORM="offscreen"))


def _png_array(path):
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def test_default_endpoints_match_the_service_and_the_sidecar():
    p = build_parser()
    o = options(p.parse_args(["view"]))
    assert (o.raw, o.denoised, o.ephys) == (DEFAULT_INPUT, DEFAULT_OUTPUT, False)
    o = options(p.parse_args(["view", "--ephys"]))
    assert (o.raw, o.denoised) == (EPHYS_RAW, EPHYS_DENOISED) == ("tcp://127.0.0.1:5556", "tcp://127.0.0.1:5560")
    o = options(p.parse_args(["view", "--raw", "none", "--roi", "1,2,3,4", "--levels", "0,10"]))
    assert o.raw is None and o.rois == ((1, 2, 3, 4),) and o.levels == (0.0, 10.0)


def _publish_imaging(pr, pd, stop):
    pr.wait_subscribed(300)  # `view` imports PySide6 and pyqtgraph first
    pd.wait_subscribed(300)
    yy, xx = np.mgrid[:64, :80]
    rng = np.random.default_rng(0)
    k = 0
    while not stop.is_set():
        clean = (200 + 150 * np.exp(-((yy - 30) ** 2 + (xx - 40) ** 2) / 60) * (1 + np.sin(k / 4))).astype(np.float32)
        pr.send(frame(k, (clean + rng.normal(0, 40, clean.shape)).astype(np.int16)))
        pd.send(frame(k, clean, dtype="float32", lag=0, latency_ms=2.5, model="toy"))
        if k % 20 == 0:
            pd.send(stats(frames_in=k + 1, frames_out=k + 1, fps_in=100.0, fps_out=100.0, model="toy"))
        k += 1
        time.sleep(0.01)


def test_cli_screenshot_from_a_live_stream(tmp_path):
    pr, pd = Publisher(), Publisher()
    stop = threading.Event()
    th = threading.Thread(target=_publish_imaging, args=(pr, pd, stop), daemon=True)
    th.start()
    out = tmp_path / "view.png"
    try:
        r = _view("--raw", pr.endpoint, "--denoised", pd.endpoint, "--screenshot", str(out), "--frames", "20",
                  "--roi", "35,25,10,10", "--size", "1400x800", "--timeout", "120",
                  env=_env())  # no display and no QT_QPA_PLATFORM: --screenshot goes offscreen by itself
    finally:
        stop.set()
        th.join(5)
        pr.close()
        pd.close()
    assert r.returncode == 0, r.stderr
    assert "saved" in r.stdout
    img = _png_array(out)
    assert img.shape[0] >= 800 and img.shape[1] >= 1400
    assert img.std() > 10
    # raw (noisy) and denoised (smooth) panels side by side in the image row: they differ
    h, w = img.shape[:2]
    band = img[int(0.15 * h):int(0.55 * h)]
    q = w // 4
    raw_panel, den_panel = band[:, :q], band[:, q:2 * q]
    assert raw_panel.std() > 5 and den_panel.std() > 5
    assert np.abs(raw_panel - den_panel).mean() > 2


def test_cli_ephys_screenshot(tmp_path):
    pr = Publisher()
    stop = threading.Event()

    def publish():
        pr.wait_subscribed(300)
        rng = np.random.default_rng(1)
        b = 0
        while not stop.is_set():
            for ch in range(32):
                pr.send(encode_data(b * 32 + ch, "ProbeA-AP", ch, f"CH{ch + 1}", b * 300, 30000.0, rng.normal(0, 30, 300)))
            b += 1
            time.sleep(0.01)

    th = threading.Thread(target=publish, daemon=True)
    th.start()
    out = tmp_path / "ephys.png"
    try:
        r = _view("--ephys", "--raw", pr.endpoint, "--denoised", "none", "--screenshot", str(out),
                  "--frames", "640", "--timeout", "120")
    finally:
        stop.set()
        th.join(5)
        pr.close()
    assert r.returncode == 0, r.stderr
    assert _png_array(out).std() > 10


def test_cli_no_data_names_the_endpoint(tmp_path):
    ep = free_endpoint()
    t0 = time.monotonic()
    r = _view("--raw", ep, "--denoised", "none", "--screenshot", str(tmp_path / "x.png"), "--timeout", "1",
              timeout=180)
    assert r.returncode == 2
    assert f"no data on {ep}" in r.stderr and r.stderr.count("error:") == 1
    assert time.monotonic() - t0 < 120  # it gives up rather than hang (the start itself may take long under load)
    assert not (tmp_path / "x.png").exists()


def test_cli_without_display_says_how_to_run_headless():
    r = _view(env=_env())
    assert r.returncode == 2
    assert "no display" in r.stderr and "QT_QPA_PLATFORM=offscreen" in r.stderr and "--screenshot" in r.stderr


def test_bind_addresses_are_connected_on_loopback():
    from livedenoise.gui.source_thread import connectable

    assert connectable("tcp://*:5571") == connectable("tcp://0.0.0.0:5571") == "tcp://127.0.0.1:5571"
    assert connectable("tcp://10.0.0.2:5571") == "tcp://10.0.0.2:5571"
