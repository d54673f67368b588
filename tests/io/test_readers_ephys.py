"""Ephys readers and writers: Open Ephys Binary (checked with open-ephys-python-tools), SpikeGLX, .dat."""

import json

import numpy as np
import pytest

from livedenoise.errors import UserError
from livedenoise.io.readers_ephys import open_recording, spikeglx_bit_volts
from livedenoise.io.writers_ephys import BinaryWriter, write_openephys


def test_binary_recording_is_read_back_by_open_ephys_python_tools(tmp_path):
    from open_ephys.analysis import Session

    rng = np.random.default_rng(0)
    uv = (rng.standard_normal((3000, 12)) * 30).astype(np.float32)
    bv = np.array([0.195] * 11 + [0.5])
    sn = np.arange(1000, 4000, dtype=np.int64)
    write_openephys(tmp_path, uv, 30000.0, bv, [f"CH{k + 1}" for k in range(12)], sample_numbers=sn, chunk=700)
    rec = Session(str(tmp_path)).recordnodes[0].recordings[0]
    cont = rec.continuous[0]
    assert cont.samples.shape == (3000, 12)
    assert np.array_equal(cont.sample_numbers, sn)
    assert np.allclose(cont.timestamps, sn / 30000.0)
    assert cont.metadata.bit_volts == list(bv)
    assert cont.metadata.sample_rate == 30000.0 and cont.metadata.stream_name == "ProbeA-AP"
    np.testing.assert_allclose(cont.get_samples(0, 3000), uv, atol=0.25 + 1e-6)
    # and by ours
    ours = open_recording(tmp_path)
    assert ours.shape == (3000, 12) and ours.format == "openephys"
    assert np.array_equal(ours.sample_numbers, sn)
    np.testing.assert_allclose(ours.read(10, 20), cont.get_samples(10, 20), rtol=1e-6)


def test_streaming_writer_appends_blocks(tmp_path):
    w = BinaryWriter(tmp_path, 2500.0, [1.0, 1.0], stream_name="Rhythm Data", first_sample=7)
    w.write(np.array([[1, 2], [3, 4]], np.float32))
    w.write(np.array([[5, 6]], np.float32))
    w.close()
    r = open_recording(tmp_path)
    assert r.read().tolist() == [[1, 2], [3, 4], [5, 6]]
    assert r.sample_numbers.tolist() == [7, 8, 9] and r.stream_name == "Rhythm Data"


def _two_stream_session(tmp_path):
    for name, n_ch in (("ProbeA-AP", 4), ("ProbeA-LFP", 2)):
        write_openephys(tmp_path / name, np.ones((10, n_ch), np.float32), 30000.0, 0.195, stream_name=name)
    # merge into one oebin with two continuous streams, as the GUI writes
    a = next((tmp_path / "ProbeA-AP").rglob("structure.oebin"))
    b = next((tmp_path / "ProbeA-LFP").rglob("structure.oebin"))
    info = json.loads(a.read_text())
    info["continuous"] += json.loads(b.read_text())["continuous"]
    folder = info["continuous"][1]["folder_name"].strip("/")
    (a.parent / "continuous" / folder).mkdir()
    for f in (b.parent / "continuous" / folder).iterdir():
        (a.parent / "continuous" / folder / f.name).write_bytes(f.read_bytes())
    a.write_text(json.dumps(info))
    return a.parent


def test_stream_choice(tmp_path):
    rec_dir = _two_stream_session(tmp_path)
    with pytest.raises(UserError, match="2 of them may hold neural data.*ProbeA-AP.*ProbeA-LFP.*--stream"):
        open_recording(rec_dir)  # two probe streams (units uV): no guess
    assert open_recording(rec_dir, stream="ProbeA-AP").n_channels == 4
    assert open_recording(rec_dir, stream="ProbeA-LFP").n_channels == 2
    assert open_recording(rec_dir, stream=1).n_channels == 2
    with pytest.raises(UserError, match="ProbeA-AP"):
        open_recording(rec_dir, stream="nope")


NP1_META = """imAiRangeMax=0.6
imAiRangeMin=-0.6
imMaxInt=512
imSampRate=30000.0
imDatPrb_type=0
nSavedChans=385
snsApLfSy=384,0,1
snsSaveChanSubset=all
firstSample=500
fileSizeBytes=0
~imroTbl=(0,384){}
"""


def _spikeglx(tmp_path, gains=(500, 250)):
    entries = "".join(f"({k} 0 0 {gains[k % 2]} 250 1)" for k in range(384))
    meta = tmp_path / "run_g0_t0.imec0.ap.meta"
    meta.write_text(NP1_META.format(entries))
    data = np.arange(385 * 20, dtype=np.int16).reshape(20, 385)
    data.tofile(tmp_path / "run_g0_t0.imec0.ap.bin")
    return tmp_path / "run_g0_t0.imec0.ap.bin", data


def test_spikeglx_385_channels_with_imro_gains_and_sync(tmp_path):
    path, data = _spikeglx(tmp_path)
    rec = open_recording(path)
    assert rec.shape == (20, 385) and rec.format == "spikeglx" and rec.sample_rate == 30000.0
    assert rec.bit_volts[0] == pytest.approx(0.6 / 512 / 500 * 1e6)  # 2.34 µV
    assert rec.bit_volts[1] == pytest.approx(0.6 / 512 / 250 * 1e6)
    assert rec.bit_volts[384] == 1.0 and rec.channel_names[384] == "SY0"
    assert rec.sample_numbers[0] == 500
    np.testing.assert_allclose(rec.read(0, 2)[:, 0], data[:2, 0] * rec.bit_volts[0], rtol=1e-6)


def test_spikeglx_lf_uses_lf_gain():
    meta = {"imAiRangeMax": "0.6", "imMaxInt": "512", "nSavedChans": "2", "snsApLfSy": "0,1,1",
            "imroTbl": "(0,1)(0 0 0 500 125 1)", "imDatPrb_type": "0"}
    bv = spikeglx_bit_volts(meta, lf=True)
    assert bv[0] == pytest.approx(0.6 / 512 / 125 * 1e6) and bv[1] == 1.0


def test_flat_dat_needs_channels_and_checks_size(tmp_path):
    p = tmp_path / "raw.dat"
    np.arange(60, dtype=np.int16).tofile(p)
    rec = open_recording(p, channels=6, sample_rate=20000)
    assert rec.shape == (10, 6) and rec.sample_rate == 20000 and rec.bit_volts[0] == 0.195
    with pytest.raises(UserError, match="whole number of 7-channel"):
        open_recording(p, channels=7, sample_rate=20000)
    with pytest.raises(UserError, match="does not exist"):
        open_recording(tmp_path / "missing.dat", channels=4)


def test_binary_recording_is_read_back_by_spikeinterface(tmp_path):
    se = pytest.importorskip("spikeinterface.extractors", reason="spikeinterface is in the dev extra")
    rng = np.random.default_rng(1)
    uv = (rng.standard_normal((3000, 8)) * 30).astype(np.float32)
    write_openephys(tmp_path, uv, 30000.0, 0.195, [f"CH{k + 1}" for k in range(8)])
    rec = se.read_openephys(tmp_path, stream_id="0")
    assert rec.get_num_channels() == 8 and rec.get_num_samples() == 3000
    assert rec.get_sampling_frequency() == 30000.0
    got = rec.get_traces(start_frame=0, end_frame=3000, return_in_uV=True)
    np.testing.assert_allclose(got, uv, atol=0.195 / 2 + 1e-4)


def test_sample_numbers_with_a_gap_are_written_and_read_as_given(tmp_path):
    """A Binary stream whose sample numbers jump keeps exactly its samples, each with its own number."""
    from open_ephys.analysis import Session

    uv = (np.random.default_rng(4).standard_normal((2000, 4)) * 30).astype(np.float32)
    sn = np.arange(2000, dtype=np.int64) + 50
    sn[1200:] += 3000
    w = BinaryWriter(tmp_path, 30000.0, np.full(4, 0.195), first_sample=50)
    w.write(uv[:700], sn[:700])
    w.write(uv[700:], sn[700:])  # a block spanning the gap
    w.close()
    rec = open_recording(tmp_path)
    assert rec.n_samples == 2000 and np.array_equal(np.asarray(rec.sample_numbers), sn)
    np.testing.assert_allclose(rec.read(), uv, atol=0.195 / 2 + 1e-5)
    cont = Session(str(tmp_path)).recordnodes[0].recordings[0].continuous[0]
    assert np.array_equal(cont.sample_numbers, sn) and cont.samples.shape == (2000, 4)


def test_flat_dat_without_its_sample_rate_is_refused(tmp_path):
    """The file has no header: a rate is never assumed (it used to be 30 kHz)."""
    p = tmp_path / "raw.dat"
    np.arange(60, dtype=np.int16).tofile(p)
    with pytest.raises(UserError, match=r"raw.dat: a flat .dat file has no header.*give --sample-rate HZ$"):
        open_recording(p, channels=6)
    with pytest.raises(UserError, match="give --channels N and --sample-rate HZ"):
        open_recording(p)
    with pytest.raises(UserError, match="--recording picks within an Open Ephys recording"):
        open_recording(p, channels=6, sample_rate=20000, recording=2)
