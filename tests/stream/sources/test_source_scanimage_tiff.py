"""ScanImage TIFF replay: the stream a live acquisition would have sent, from the file."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from livedenoise.errors import UserError
from livedenoise.io.scanimage_tiff import write_scanimage_tiff
from livedenoise.stream.sources.scanimage_tiff import is_scanimage_tiff, scanimage_acquisition

H, W = 12, 20  # non-square


def volumes(t, z, c, dtype=np.int16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(-2000, 2000, size=(t, z, c, H, W)).astype(dtype)


@pytest.mark.parametrize("channels", [(1,), (2,), (1, 2)])
@pytest.mark.parametrize("planes", [1, 2, 3])
def test_replay_deinterleaves_channels_and_planes(tmp_path, channels, planes):
    data = volumes(5, planes, len(channels))
    path = write_scanimage_tiff(tmp_path / "scan.tif", data, channels=channels, frame_rate=30.0, zoom=1.7)

    with tifffile.TiffFile(path) as tif:  # tifffile sees a ScanImage file with our metadata
        assert tif.is_scanimage and tif.is_bigtiff
        fd = tif.scanimage_metadata["FrameData"]
        saved = fd["SI.hChannels.channelSave"]
        assert [c for row in np.atleast_1d(saved).tolist() for c in np.atleast_1d(row)] == list(channels)
        assert fd["SI.hStackManager.numSlices"] == planes
        assert "RoiGroups" in tif.scanimage_metadata
        assert tif.pages[0].description.startswith("frameNumbers = 1\n")
    assert is_scanimage_tiff(path)

    meta, frames = scanimage_acquisition(path)
    assert meta["channels"] == list(channels) and meta["planes"] == planes
    assert meta["shape"] == [H, W] and meta["dtype"] == "int16"
    assert meta["frame_rate"] == pytest.approx(30.0) and meta["zoom"] == pytest.approx(1.7)
    assert meta["volume_rate"] == pytest.approx(30.0 / planes)
    assert meta["frame_step"] == planes and meta["source"] == "scanimage"
    got = list(frames)
    assert len(got) == data.size // (H * W)
    i = 0
    for t in range(5):
        for z in range(planes):
            for k, ch in enumerate(channels):
                h, px = got[i]
                i += 1
                frame = t * planes + z + 1  # ScanImage counts every plane as a frame
                assert (h.frame, h.channel, h.plane) == (frame, ch, z + 1)
                assert h.t == pytest.approx((frame - 1) / 30.0, abs=1e-6)
                assert h.shape == (H, W) and h.dtype == "int16" and h.order == "C"
                np.testing.assert_array_equal(px, data[t, z, k])


def test_frame_numbers_and_timestamps_come_from_each_page(tmp_path):
    data = volumes(4, 1, 1)
    numbers = np.array([[3], [4], [7], [8]])  # frames 5, 6 were never logged
    stamps = np.array([[0.1], [0.2], [0.5], [0.61]])
    path = write_scanimage_tiff(tmp_path / "gaps.tif", data, frame_numbers=numbers, timestamps=stamps)
    _, frames = scanimage_acquisition(path)
    got = [(h.frame, h.t) for h, _ in frames]
    assert got == [(3, 0.1), (4, 0.2), (7, 0.5), (8, 0.61)]


def test_flyback_frames_are_left_out(tmp_path):
    data = volumes(3, 2, 1)
    path = write_scanimage_tiff(tmp_path / "fb.tif", data, flyback_frames=1)
    meta, frames = scanimage_acquisition(path)
    assert meta["planes"] == 2 and meta["frame_step"] == 3
    got = [(h.frame, h.plane) for h, _ in frames]
    assert got == [(1, 1), (2, 2), (4, 1), (5, 2), (7, 1), (8, 2)]


def test_slow_stack_order(tmp_path):
    data = volumes(4, 3, 2)  # 4 frames per slice, 3 slices, 2 channels
    path = write_scanimage_tiff(tmp_path / "slow.tif", data, slow_stack=True)
    _, frames = scanimage_acquisition(path)
    got = list(frames)
    assert [(h.channel, h.plane) for h, _ in got[:10]] == [
        (1, 1), (2, 1), (1, 1), (2, 1), (1, 1), (2, 1), (1, 1), (2, 1), (1, 2), (2, 2)]
    for h, px in got:
        t = (h.frame - 1) % 4
        np.testing.assert_array_equal(px, data[t, h.plane - 1, h.channel - 1])


@pytest.mark.parametrize("dtype,wire", [(np.uint16, "uint16"), (np.float32, "float32")])
def test_sample_types(tmp_path, dtype, wire):
    data = np.abs(volumes(2, 1, 1)).astype(dtype)
    path = write_scanimage_tiff(tmp_path / "s.tif", data)
    meta, frames = scanimage_acquisition(path)
    assert meta["dtype"] == wire
    for (h, px), want in zip(frames, data[:, 0, 0]):
        assert h.dtype == wire and px.dtype == np.dtype(wire)
        np.testing.assert_array_equal(px, want)


def test_plain_tiff_is_refused_with_a_clear_message(tmp_path):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, np.zeros((3, H, W), np.int16), photometric="minisblack")
    assert not is_scanimage_tiff(path)
    with pytest.raises(UserError, match="no ScanImage metadata"):
        scanimage_acquisition(path)


def test_missing_and_truncated_files(tmp_path):
    assert not is_scanimage_tiff(tmp_path / "nope.tif")
    with pytest.raises(UserError, match="does not exist"):
        scanimage_acquisition(tmp_path / "nope.tif")
    path = write_scanimage_tiff(tmp_path / "cut.tif", volumes(6, 1, 1))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - H * W])  # the last frame's pixels cut short
    with pytest.raises(UserError):
        meta, frames = scanimage_acquisition(path)
        list(frames)


def test_livedenoise_replay_publishes_the_recorded_stream(tmp_path):
    """`livedenoise replay` of a ScanImage TIFF: what a subscriber gets equals the recording."""
    import threading

    import zmq

    replay = pytest.importorskip("livedenoise.stream.replay")
    from livedenoise.stream.loopback import free_endpoints
    from livedenoise.stream.protocols.frames import ControlMessage, decode

    data = volumes(3, 2, 2)
    path = write_scanimage_tiff(tmp_path / "rep.tif", data, channels=(1, 2), frame_rate=60.0)
    endpoint = free_endpoints(1)[0]
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    result = {}
    th = threading.Thread(target=lambda: result.update(replay.replay_movie(path, endpoint, fps=None, wait_s=120.0)))
    th.start()
    msgs = []
    try:
        while sub.poll(120_000):  # the first message comes once replay has seen the subscription
            msg = decode(sub.recv_multipart())
            msgs.append(msg)
            if isinstance(msg, ControlMessage) and msg.topic == "stop":
                break
    finally:
        th.join(120)
        sub.close(0)
        ctx.term()
    assert msgs[0].topic == "start" and msgs[0].meta["planes"] == 2 and msgs[0].meta["channels"] == [1, 2]
    frames = [m for m in msgs if not isinstance(m, ControlMessage)]
    assert len(frames) == 12
    for m in frames:
        h = m.header
        t, z = divmod(h.frame - 1, 2)
        assert h.plane == z + 1 and h.t == pytest.approx((h.frame - 1) / 60.0, abs=1e-6)
        np.testing.assert_array_equal(m.pixels, data[t, z, h.channel - 1])
