"""Probe geometry from the recording's metadata (SpikeGLX .meta, probeinterface files), never guessed;
the acquisition's settings.xml carried into recordings the writers make."""

import json

import numpy as np
import pytest

from livedenoise.errors import UserError
from livedenoise.io.probe_geometry import np1_positions, read_probe_file, require_positions, site_positions
from livedenoise.io.readers_ephys import open_recording
from livedenoise.io.writers_ephys import BinaryWriter, write_openephys


def write_np1_glx(folder, n=8):
    """A SpikeGLX NP1.0 AP .bin/.meta: n probe channels + the sync channel, ~imroTbl and ~snsGeomMap."""
    data = np.zeros((40, n + 1), "<i2")
    path = folder / "t_g0_t0.imec0.ap.bin"
    data.tofile(path)
    meta = {"nSavedChans": n + 1, "fileSizeBytes": data.nbytes, "firstSample": 0, "typeThis": "imec",
            "imAiRangeMax": 0.6, "imAiRangeMin": -0.6, "imMaxInt": 512, "imDatPrb_type": 0, "imSampRate": 30000,
            "imDatPrb_pn": "NP1000", "snsApLfSy": f"{n},0,1", "snsSaveChanSubset": "all", "acqApLfSy": f"{n},{n},1"}
    geom = "(NP1000,1,0,70)" + "".join(f"(0:{[43, 11, 59, 27][c % 4]}:{(c // 2) * 20}:1)" for c in range(n))
    imro = f"(0,{n})" + "".join(f"({c} 0 0 500 250 1)" for c in range(n))
    chans = f"({n},{n},1)" + "".join(f"(AP{c};{c}:{c})" for c in range(n)) + f"(SY0;{n}:{n})"
    lines = [f"{k}={v}" for k, v in meta.items()] + [f"~imroTbl={imro}", f"~snsGeomMap={geom}", f"~snsChanMap={chans}"]
    path.with_suffix(".meta").write_text("\n".join(lines) + "\n")
    return path


def test_spikeglx_sites_come_from_the_meta_for_the_probe_channels_only(tmp_path):
    rec = open_recording(write_np1_glx(tmp_path))
    assert rec.n_channels == 9  # 8 probe channels + sync
    pos, where = site_positions(rec)
    assert pos.shape == (8, 2) and where.endswith(".meta")
    d = np.hypot(*(pos[1:] - pos[:-1]).T)
    assert np.all(d > 0) and np.ptp(pos[:, 1]) == 60.0  # four rows 20 µm apart, two sites a row


def test_a_probeinterface_file_gives_the_sites_in_channel_order(tmp_path):
    import probeinterface as pi

    pos = np1_positions(6)
    probe = pi.Probe(ndim=2, si_units="um")
    probe.set_contacts(positions=pos[::-1], shapes="circle", shape_params={"radius": 5})
    probe.set_device_channel_indices(np.arange(6)[::-1])  # contacts listed in reverse channel order
    pi.write_probeinterface(tmp_path / "probe.json", probe)
    np.testing.assert_allclose(read_probe_file(tmp_path / "probe.json", 6), pos)
    with pytest.raises(UserError, match="6 wired contacts, the recording 7 channels"):
        read_probe_file(tmp_path / "probe.json", 7)
    (tmp_path / "bad.json").write_text(json.dumps({"nothing": 1}))
    with pytest.raises(UserError, match="not a probeinterface probe file"):
        read_probe_file(tmp_path / "bad.json", 6)


def test_no_geometry_is_none_and_a_model_that_needs_it_is_refused_naming_the_flag(tmp_path):
    write_openephys(tmp_path / "oe", np.zeros((100, 4), np.float32), 30000.0)
    rec = open_recording(tmp_path / "oe")
    assert site_positions(rec)[0] is None
    with pytest.raises(UserError, match="--probe FILE"):
        require_positions(rec, what="--arch site-ephys")


def test_a_recording_written_with_the_acquisition_settings_carries_them_at_its_record_node(tmp_path):
    settings = tmp_path / "settings.xml"
    settings.write_text("<SETTINGS><INFO><VERSION>0.6.7</VERSION></INFO></SETTINGS>\n")
    with BinaryWriter(tmp_path / "out", 30000.0, np.full(4, 0.195), settings=settings) as w:
        w.write(np.zeros((50, 4), np.float32))
    copied = tmp_path / "out" / "Record Node 101" / "settings.xml"
    assert copied.read_bytes() == settings.read_bytes()
    with BinaryWriter(tmp_path / "out", 30000.0, np.full(4, 0.195), settings=settings) as w:  # a second recording
        w.write(np.zeros((50, 4), np.float32))
    assert open_recording(tmp_path / "out", recording=2).n_samples == 50
    other = tmp_path / "other.xml"
    other.write_text("<SETTINGS/>")
    with pytest.raises(UserError, match="exists and differs"):
        BinaryWriter(tmp_path / "out", 30000.0, np.full(4, 0.195), settings=other)
