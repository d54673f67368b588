"""Harness: run the shipped ScanImage user functions under GNU Octave against a Python SUB socket.

(Not a conftest.py: other test folders import their own `conftest` by name.)

One Octave process per scenario: `drive_acquisition.m` (beside this file) plays
an acquisition through the real .m files with a stand-in hSI, and the test reads
what arrives on a pyzmq SUB socket. Skipped, with the reason, when Octave, Java
or the JeroMQ jar is missing (the README test command `scripts/test.sh` installs them, and CI runs it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from livedenoise.stream.loopback import free_port
from livedenoise.stream.protocols.frames import ControlMessage, FrameMessage, decode
from livedenoise.stream.scanimage import matlab_path

HERE = Path(__file__).resolve().parent
JAR = os.environ.get("LIVEDENOISE_JEROMQ_JAR", "/usr/share/java/jeromq.jar")
_NOISE = ("ignoring const execution_exception",)
PROBE = b"probe"
"""What drive_acquisition.m sends until the go file exists: one arriving means the subscriptions are in place."""


def _octave_env() -> dict:
    env = dict(os.environ)
    env.pop("LIVEDENOISE_ENDPOINT", None)
    env["LIVEDENOISE_JEROMQ_JAR"] = JAR
    if "JAVA_HOME" not in env and not Path("/usr/lib/jvm/default-java").exists():
        java = shutil.which("java")
        if java:  # Octave looks for /usr/lib/jvm/default-java unless told otherwise
            env["JAVA_HOME"] = str(Path(os.path.realpath(java)).parent.parent)
    return env


def clean_stderr(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not any(n in line for n in _NOISE))


_FOUND: list[str] = []


def _skip(reason: str):
    # On CI (scripts/test.sh installs octave, libjeromq-java and a JRE) a missing piece is a failure:
    # these tests are the only check of the MATLAB side and must not pass by skipping.
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI must run the Octave tests: see scripts/test.sh)", pytrace=False)
    pytest.skip(reason)


def require_octave() -> str:
    """octave-cli that can load JeroMQ, or skip with the reason (fail on CI); checked once."""
    if _FOUND:
        return _FOUND[0]
    exe = shutil.which("octave-cli") or shutil.which("octave")
    if exe is None:
        _skip("GNU Octave is not installed (apt-get install octave); the ScanImage user functions are tested under it")
    if not Path(JAR).exists():
        _skip(f"JeroMQ jar {JAR} not found (apt-get install libjeromq-java, or set LIVEDENOISE_JEROMQ_JAR)")
    probe = subprocess.run(
        [exe, "--norc", "--quiet", "--no-window-system", "--eval",
         f"javaaddpath('{JAR}'); c = javaObject('org.zeromq.ZContext'); c.close(); disp('JEROMQ_OK')"],
        capture_output=True, text=True, timeout=300, env=_octave_env(),
    )
    if "JEROMQ_OK" not in probe.stdout:
        _skip(
            "Octave cannot load JeroMQ through Java (apt-get install default-jre-headless?): "
            + (clean_stderr(probe.stderr).strip().splitlines() or ["no output"])[0]
        )
    _FOUND.append(exe)
    return exe


def _oct(v) -> str:
    """A Python value as an Octave literal."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float, np.integer, np.floating)):
        return repr(float(v)) if isinstance(v, (float, np.floating)) else str(int(v))
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    if isinstance(v, tuple):  # numeric vector
        return "[" + " ".join(_oct(x) for x in v) + "]"
    if isinstance(v, list):  # cell
        return "{" + ", ".join(_oct(x) for x in v) + "}"
    raise TypeError(v)


@dataclass
class Run:
    messages: list = field(default_factory=list)
    stdout: str = ""
    stderr: str = ""
    returncode: int | None = None

    @property
    def frames(self) -> list[FrameMessage]:
        return [m for m in self.messages if isinstance(m, FrameMessage)]

    def control(self, topic: str) -> list[ControlMessage]:
        return [m for m in self.messages if isinstance(m, ControlMessage) and m.topic == topic]

    def warnings(self, text: str = "livedenoise") -> list[str]:
        return [line for line in self.stderr.splitlines() if "warning" in line.lower() and text in line]


DEFAULTS = dict(
    lines=24, pixels=40, channels=(1,), save=(1,), planes=1, layout="fastz", cls="int16",
    frames=tuple(range(1, 11)), dt=1 / 30, args=None, transposed=True, start=True,
    finish="done", malformed=(), acquisitions=1, flyback=0, zidx=False,
)


def run_acquisition(octave: str, tmp_path: Path, *, subscribe: bool = True, expect_stop: bool = True,
                    timeout: float = 300.0, listen_s: float = 3.0, **cfg) -> Run:
    cfg = {**DEFAULTS, **cfg}
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    cfg.setdefault("endpoint", endpoint)
    if cfg["args"] is None:
        cfg["args"] = ["endpoint", endpoint]
    go, done = tmp_path / f"go-{port}", tmp_path / f"done-{port}"
    cfg["go_file"], cfg["done_file"] = str(go), str(done)
    for key in ("channels", "save", "frames", "malformed"):
        cfg[key] = tuple(cfg[key])
    lines = [f"addpath('{matlab_path()}');", f"addpath('{HERE}');", "cfg = struct();"]
    lines += [f"cfg.{k} = {_oct(v)};" for k, v in cfg.items()]
    lines.append("drive_acquisition(cfg);")
    script = "\n".join(lines)

    import zmq

    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 100000)
    sub.setsockopt(zmq.LINGER, 0)
    for topic in (b"frame", b"start", b"stop", PROBE):
        sub.setsockopt(zmq.SUBSCRIBE, topic)
    sub.connect(cfg["endpoint"] if subscribe else endpoint)
    proc = subprocess.Popen(
        [octave, "--norc", "--quiet", "--no-window-system", "--eval", script],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_octave_env(), cwd=tmp_path,
    )
    run = Run()
    try:
        if subscribe:  # until a probe arrives: then the publisher has every subscription of this socket
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and proc.poll() is None:
                if sub.poll(100) and sub.recv_multipart()[0] == PROBE:
                    break
        go.touch()
        if subscribe:
            deadline = time.monotonic() + (timeout if expect_stop else listen_s)
            stops = 0
            while time.monotonic() < deadline:
                if sub.poll(100):
                    parts = sub.recv_multipart()
                    if parts[0] == PROBE:  # sent before the go file was seen
                        continue
                    msg = decode(parts)
                    run.messages.append(msg)
                    if expect_stop and isinstance(msg, ControlMessage) and msg.topic == "stop":
                        stops += 1
                        if stops == cfg["acquisitions"]:
                            break
        done.touch()
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        sub.close()
        ctx.term()
    run.stdout, run.stderr, run.returncode = out, clean_stderr(err), proc.returncode
    return run


def expected_image(lines: int, pixels: int, frame: int, channel: int, plane: int, cls: str) -> np.ndarray:
    """Mirror of si_test_image.m."""
    l, p = np.meshgrid(np.arange(lines), np.arange(pixels), indexing="ij")
    v = np.mod(l * pixels + p + 1000 * plane + 3000 * channel + 7 * frame, 30000)
    if cls == "int16":
        return (v - 15000).astype(np.int16)
    if cls == "uint16":
        return (v + 20000).astype(np.uint16)
    return v.astype(np.float32) + np.float32(0.5)
