"""Reading ScanImage TIFFs as movies: one (channel, plane) stream at a time."""

from __future__ import annotations

import numpy as np
import pytest

from livedenoise.errors import UserError
from livedenoise.io.readers import Movie, open_movie
from livedenoise.io.readers_scanimage import is_scanimage_tiff, open_scanimage_movie
from livedenoise.io.scanimage_tiff import write_scanimage_tiff


def make(tmp_path, t=6, z=3, c=2, channels=None, dtype=np.int16, **kw):
    rng = np.random.default_rng(1)
    data = rng.integers(0, 3000, size=(t, z, c, 10, 16)).astype(dtype)
    path = write_scanimage_tiff(tmp_path / "si.tif", data, channels=channels, frame_rate=30.0, **kw)
    return path, data


def test_channel_and_plane_streams(tmp_path):
    path, data = make(tmp_path, channels=(1, 2))
    assert is_scanimage_tiff(path)
    for k, ch in enumerate((1, 2)):
        for z in (1, 2, 3):
            with open_movie(path, channel=ch, plane=z) as m:
                assert isinstance(m, Movie)
                assert m.shape == (6, 10, 16) and m.dtype == np.int16 and m.memmapped
                np.testing.assert_array_equal(m.read(0, 6), data[:, z - 1, k])
                np.testing.assert_array_equal(m.read(2, 4), data[2:4, z - 1, k])
                assert list(m.frame_numbers) == [3 * t + z for t in range(6)]
                np.testing.assert_allclose(m.frame_timestamps, (m.frame_numbers - 1) / 30.0, atol=1e-6)
                assert m.frame_rate == pytest.approx(10.0)
                assert f"channel {ch}, plane {z}" in m.describe()


def test_single_stream_file_needs_no_choice(tmp_path):
    path, data = make(tmp_path, z=1, c=1, channels=(2,), dtype=np.float32)
    with open_movie(path) as m:
        assert (m.channel, m.plane) == (2, 1) and m.dtype == np.float32
        np.testing.assert_array_equal(np.concatenate([f for _, f in m.chunks(4)]), data[:, 0, 0])


def test_several_channels_or_planes_need_a_choice(tmp_path):
    path, _ = make(tmp_path, channels=(1, 3))
    with pytest.raises(UserError, match=r"channels 1, 3 and planes 1-3.*--channel"):
        open_scanimage_movie(path)
    with pytest.raises(UserError, match=r"--plane \(1-3\)"):
        open_scanimage_movie(path, channel=3)


def test_unsaved_channel_or_missing_plane_lists_what_exists(tmp_path):
    path, _ = make(tmp_path, channels=(1, 3))
    with pytest.raises(UserError, match=r"no channel 2: ScanImage saved channels 1, 3"):
        open_movie(path, channel=2, plane=1)
    with pytest.raises(UserError, match=r"no plane 4: it holds planes 1-3"):
        open_movie(path, channel=1, plane=4)


def test_plain_tiff_is_not_scanimage(tmp_path):
    import tifffile

    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, np.zeros((4, 8, 8), np.uint16), photometric="minisblack")
    assert not is_scanimage_tiff(path)
    with pytest.raises(UserError, match="no ScanImage metadata"):
        open_scanimage_movie(path)


def test_classic_tiff_with_scanimage_tags_uses_the_page_metadata(tmp_path):
    """No BigTIFF static header: frame data from the Software tag, pages read by tifffile."""
    import tifffile

    from livedenoise.io.scanimage_tiff import frame_data_text, frame_description

    rng = np.random.default_rng(3)
    data = rng.integers(0, 4000, size=(4, 2, 8, 12)).astype(np.uint16)  # (T, C, H, W)
    soft = frame_data_text({"SI.hChannels.channelSave": (1, 2), "SI.hStackManager.numSlices": 1,
                            "SI.hStackManager.framesPerSlice": 4, "SI.hRoiManager.scanFrameRate": 15.0})
    path = tmp_path / "classic.tif"
    with tifffile.TiffWriter(path) as w:
        for t in range(4):
            for c in range(2):
                w.write(data[t, c], photometric="minisblack", compression="zlib",
                        description=frame_description(t + 1, t / 15.0), software=soft)
    assert is_scanimage_tiff(path)
    with open_movie(path, channel=2) as m:
        assert not m.memmapped
        np.testing.assert_array_equal(m.read(0, 4), data[:, 1])
        assert list(m.frame_numbers) == [1, 2, 3, 4]
        assert m.frame_rate == pytest.approx(15.0)
