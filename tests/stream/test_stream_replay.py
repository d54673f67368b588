"""replay_movie: start / paced frames / stop, loops, subscriber wait, ScanImage multi-stream sources."""

import threading

import numpy as np
from streamkit import Collector, endpoints

from livedenoise.stream.replay import replay_movie, wire_dtype


def test_wire_dtypes():
    assert wire_dtype(np.int16) == "int16" and wire_dtype(np.dtype(">u2")) == "uint16"
    assert wire_dtype(np.uint8) == "int16" and wire_dtype(np.float64) == "float32"


def test_loop_keeps_counting_frames_until_stopped(tmp_path):
    np.save(tmp_path / "m.npy", np.arange(5 * 2 * 3, dtype=np.int16).reshape(5, 2, 3))
    i, _ = endpoints()
    col = Collector(i)
    stop = threading.Event()
    try:
        th = threading.Thread(target=lambda: out.update(replay_movie(tmp_path / "m.npy", i, fps=200, loop=True,
                                                                    stop_event=stop, wait_s=120)))
        out = {}
        th.start()
        assert col.wait_for(lambda m: getattr(getattr(m, "header", None), "frame", -1) >= 12)
        stop.set()
        th.join(60)
        assert not th.is_alive(), "replay did not stop"
        assert col.wait_for(lambda m: getattr(m, "topic", "") == "stop")
    finally:
        col.close()
    frames = [m.header.frame for m, _ in col.messages if hasattr(m, "header")]
    assert frames == list(range(len(frames))) and out["passes"] >= 3
    assert [int(m.pixels[0, 0]) for m, _ in col.messages if hasattr(m, "header")][:7] == [0, 6, 12, 18, 24, 0, 6]


def test_scanimage_source_publishes_every_stream_paced_by_its_times(tmp_path):
    from livedenoise.io.scanimage_tiff import write_scanimage_tiff

    data = np.zeros((6, 1, 2, 3, 4), np.int16)  # (T, Z, C, H, W)
    for k in range(6):
        for c, ch in enumerate((1, 2)):
            data[k, 0, c] = 10 * ch + k
    path = write_scanimage_tiff(tmp_path / "si.tif", data, channels=[1, 2], frame_rate=20.0)
    i, _ = endpoints()
    col = Collector(i)
    try:
        summary = replay_movie(path, i, fps=None, wait_s=120)
        assert col.wait_for(lambda m: getattr(m, "topic", "") == "stop")
    finally:
        col.close()
    assert summary["frames"] == 12
    start = col.messages[0][0]
    assert start.topic == "start" and start.meta["channels"] == [1, 2]
    frames = [(m.header.channel, m.header.frame, int(m.pixels[0, 0])) for m, _ in col.messages if hasattr(m, "header")]
    assert [f for f in frames if f[0] == 2] == [(2, k + 1, 20 + k) for k in range(6)]
    times = [t for m, t in col.messages if hasattr(m, "header")]
    assert times[-1] - times[0] >= 5 / 20 * 0.8  # paced by the recorded frame times (0.25 s)
