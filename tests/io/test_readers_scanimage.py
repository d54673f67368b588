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


# ------------------------------------------------------------ issue 13: read what the file says


def test_file_starting_mid_volume_is_placed_by_frame_numbers(tmp_path):
    """One file of a multi-file acquisition: 3 planes + 1 flyback = 4 frames per volume, the file starts at
    acquisition frame 50 (frameNumbers 51 = plane 3). --plane 1 must give plane 1's frames."""
    rng = np.random.default_rng(13)
    t, z, c = 30, 3, 2
    data = rng.integers(0, 4000, size=(t, z, c, 10, 16)).astype(np.int16)
    path = write_scanimage_tiff(tmp_path / "acq_00002.tif", data, channels=(1, 2), flyback_frames=1,
                                frame_rate=40.0, frame_range=(50, None))
    per_volume = 4
    for plane in (1, 2, 3):
        frames = [f for f in range(50, t * per_volume) if f % per_volume == plane - 1]
        for k, ch in enumerate((1, 2)):
            with open_movie(path, channel=ch, plane=plane) as m:
                assert len(m) == len(frames)
                np.testing.assert_array_equal(m.read(0, len(m)), data[[f // per_volume for f in frames], plane - 1, k])
                assert list(m.counters()) == [f + 1 for f in frames]  # the file's frameNumbers
                assert m.frame_step == per_volume
                assert m.frame_rate == pytest.approx(10.0)
    with open_movie(path, channel=1, plane=1) as m:
        assert m.counters()[0] == 53  # not the file's first page (51, plane 3)


def test_inconsistent_frame_numbers_are_refused(tmp_path):
    import tifffile

    from livedenoise.io.scanimage_tiff import frame_data_text, frame_description

    soft = frame_data_text({"SI.hChannels.channelSave": (1, 2), "SI.hStackManager.numSlices": 1,
                            "SI.hRoiManager.scanFrameRate": 15.0})
    path = tmp_path / "odd.tif"
    with tifffile.TiffWriter(path) as w:
        for n in (1, 1, 2, 3, 3):  # frame 2 on one page only, with two saved channels
            w.write(np.zeros((8, 12), np.uint16), photometric="minisblack", description=frame_description(n, n / 15.0),
                    software=soft, contiguous=False)
    with pytest.raises(UserError, match=r"frame 2 \(frameNumbers\) is on 1 page\(s\) but ScanImage saved 2 channel"):
        open_movie(path, channel=1)


def test_scanimage3_state_header_one_saved_channel_of_two(tmp_path):
    """ScanImage 3.x: `state.*` lines; channel 2 of acquired 1 and 2 saved, 8.14 Hz."""
    from livedenoise.io.scanimage_tiff import write_legacy_scanimage_tiff

    rng = np.random.default_rng(3)
    data = rng.integers(0, 4000, size=(12, 1, 1, 16, 20)).astype(np.uint16)
    path = write_legacy_scanimage_tiff(tmp_path / "si3.tif", data, version=3, saved=(2,), acquired=(1, 2),
                                       frame_rate=8.14)
    assert is_scanimage_tiff(path)
    for kw in ({}, {"channel": 2}, {"channel": 2, "plane": 1}):
        with open_movie(path, **kw) as m:
            assert m.shape == (12, 16, 20) and m.dtype == np.uint16
            assert (m.channel, m.plane) == (2, 1)
            assert m.frame_rate == pytest.approx(8.14)
            assert m.counters() is None  # ScanImage 3 logs no frame numbers
            np.testing.assert_array_equal(m.read(0, 12), data[:, 0, 0])
            assert "ScanImage 3.8" in m.describe() and "8.14 Hz" in m.describe()
    with pytest.raises(UserError, match=r"has no channel 1: ScanImage saved channel 2 only \(state.acq.savingChannelN\)"):
        open_movie(path, channel=1)
    with pytest.raises(UserError, match=r"has no plane 2: it holds plane 1 only \(state.acq.numberOfZSlices\)"):
        open_movie(path, plane=2)


def test_scanimage3_header_that_contradicts_itself_is_refused(tmp_path):
    from livedenoise.io.scanimage_tiff import write_legacy_scanimage_tiff

    data = np.zeros((4, 1, 1, 8, 8), np.uint16)
    path = write_legacy_scanimage_tiff(tmp_path / "bad.tif", data, saved=(1,),
                                       extra={"state.acq.numberOfChannelsSave": 2})
    with pytest.raises(UserError, match=r"says 2 channel\(s\) saved .* but flags channels 1"):
        open_movie(path)


@pytest.mark.parametrize("version", [3, 4, 5])
def test_legacy_headers_give_channels_and_slow_stack_planes(tmp_path, version):
    """ScanImage 3.x / 4 / 5.0 z-stacks: slice after slice, 4 frames each, channels 1 and 3 saved."""
    from livedenoise.io.scanimage_tiff import write_legacy_scanimage_tiff

    rng = np.random.default_rng(version)
    data = rng.integers(0, 4000, size=(4, 3, 2, 10, 14)).astype(np.int16)
    path = write_legacy_scanimage_tiff(tmp_path / f"si{version}.tif", data, version=version, saved=(1, 3),
                                       frame_rate=5.0)
    with pytest.raises(UserError, match=r"channels 1, 3 and planes 1-3.*--channel"):
        open_movie(path)
    for z in (1, 2, 3):
        for k, ch in enumerate((1, 3)):
            with open_movie(path, channel=ch, plane=z) as m:
                np.testing.assert_array_equal(m.read(0, len(m)), data[:, z - 1, k])
                assert m.frame_rate == pytest.approx(5.0)
    with open_movie(path, channel=3, plane=2) as m:  # ScanImage 5.0 pages carry frameNumbers; 3 and 4 do not
        assert (list(m.counters()) if version == 5 else m.counters()) == ([5, 6, 7, 8] if version == 5 else None)


def test_axes_do_not_apply_to_scanimage_files(tmp_path):
    path, _ = make(tmp_path, z=1, c=1)
    with pytest.raises(UserError, match="--axes does not apply .* ScanImage"):
        open_movie(path, axes="TYX")


def _real_scanimage38():
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    for shared in (repo.parent / "shared", Path("/work/shared")):
        path = shared / "realdata" / "scanimage38" / "Blank-IPA_1s_16r_032.tif"
        if path.exists():
            return path
    pytest.skip("the real ScanImage 3.8 file (../shared/realdata/scanimage38) is not on this machine")


def test_real_scanimage38_file_is_read_with_its_one_channel_and_rate():
    """jefferis/scanimage inst/extdata: ScanImage 3.8, only channel 2 acquired and saved, 8.14 Hz, 30 x 64 x 64."""
    import tifffile

    path = _real_scanimage38()
    want = tifffile.imread(path)
    for kw in ({}, {"channel": 2}):
        with open_movie(path, **kw) as m:
            assert m.shape == (30, 64, 64) and m.dtype == np.uint16
            assert (m.channel, m.plane) == (2, 1)
            assert m.frame_rate == pytest.approx(8.138, abs=1e-3)
            np.testing.assert_array_equal(m.read(0, 30), want)


def test_real_scanimage38_unsaved_channel_is_one_clear_line(tmp_path):
    import subprocess
    import sys

    path = _real_scanimage38()
    r = subprocess.run([sys.executable, "-m", "livedenoise", "train", str(path), "--channel", "1", "--out",
                        str(tmp_path / "m.pt"), "--quiet"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "has no channel 1: ScanImage saved channel 2 only" in lines[0], r.stderr
