"""Open Ephys input: the reader refuses to guess between streams or recordings; the written copy is complete.

Inputs are small sessions laid out as the GUI writes them (tests/io/oe_layouts.py): GUI 0.6 with an NI-DAQ
stream listed before the probe, events and messages, synchronised seconds; GUI 0.4.x whose `timestamps.npy`
holds the sample numbers; sessions with several recordings or Record Nodes. The copy is checked byte for byte
and through the standard readers (open-ephys-python-tools; SpikeInterface/neo for the 0.4 layout).
"""

import json

import numpy as np
import pytest

from livedenoise.errors import UserError
from livedenoise.io.readers_ephys import find_oebin, open_recording, stream_kind
from livedenoise.io.writers_ephys import OpenEphysCopyWriter, writer_like
from livedenoise.sim.ephys import simulate_ephys
from tests.io.oe_layouts import NIDAQ, PROBE_AP, PROBE_LFP, gui04_recording, gui06_recording, tree


def copy_negated(rec, out, chunk=700):
    """Write `rec` through `writer_like`, its samples negated, in chunks with its own sample numbers."""
    w = writer_like(rec, out, description="test")
    with w:
        for a in range(0, rec.n_samples, chunk):
            w.write_raw(-rec.read_raw(a, a + chunk), np.asarray(rec.sample_numbers[a:a + chunk]))
    return w.path


# ----------------------------------------------------------------------------- choosing a stream


def test_the_probe_is_read_when_the_other_stream_is_ni_daq_by_its_metadata(tmp_path):
    rec_dir = gui06_recording(tmp_path / "s", streams=(NIDAQ, PROBE_AP))
    assert stream_kind(json.loads((rec_dir / "structure.oebin").read_text())["continuous"][0])[0] == "auxiliary"
    rec = open_recording(tmp_path / "s")
    assert rec.stream_name == "ProbeA-AP" and rec.n_channels == 8
    assert len(rec.notes) == 1 and "ProbeA-AP" in rec.notes[0] and "PXIe-6341" in rec.notes[0]
    assert "ProbeA-AP" in rec.describe() and rec.notes[0] in rec.describe()
    ni = open_recording(tmp_path / "s", stream="PXIe-6341")  # still reachable, by name, folder or index
    assert ni.n_channels == 4 and ni.notes == []
    assert open_recording(tmp_path / "s", stream=0).stream_name == "PXIe-6341"
    assert open_recording(tmp_path / "s", stream="NI-DAQmx-102.PXIe-6341").stream_name == "PXIe-6341"


def test_ni_daq_named_by_its_channels_only_is_also_recognised(tmp_path):
    unlabelled = {**NIDAQ, "units": ""}  # no units: the AI0..AI3 names say what the channels are
    probe = {**PROBE_AP, "units": ""}  # neither do the probe's: it may be neural
    gui06_recording(tmp_path / "s", streams=(unlabelled, probe))
    assert open_recording(tmp_path / "s").stream_name == "ProbeA-AP"


def test_two_streams_that_may_hold_neural_data_are_refused_with_the_list(tmp_path):
    gui06_recording(tmp_path / "s", streams=(PROBE_AP, PROBE_LFP))
    with pytest.raises(UserError) as e:
        open_recording(tmp_path / "s")
    msg = str(e.value)
    assert "\n" not in msg
    for word in ("0 'ProbeA-AP'", "8 ch at 30000 Hz", "1 'ProbeA-LFP'", "at 2500 Hz", "--stream NAME", "--stream INDEX"):
        assert word in msg, msg
    assert open_recording(tmp_path / "s", stream="ProbeA-LFP").sample_rate == 2500.0
    assert open_recording(tmp_path / "s", stream=1).stream_name == "ProbeA-LFP"
    with pytest.raises(UserError, match="no stream 'ProbeB-AP'.*ProbeA-AP.*ProbeA-LFP"):
        open_recording(tmp_path / "s", stream="ProbeB-AP")


def test_only_auxiliary_streams_are_refused_too(tmp_path):
    gui06_recording(tmp_path / "s", streams=(NIDAQ, {**NIDAQ, "folder": "NI-DAQmx-103.PXIe-6342", "name": "PXIe-6342",
                                                     "id": 103}))
    with pytest.raises(UserError, match="none holds neural data.*PXIe-6341.*PXIe-6342.*--stream"):
        open_recording(tmp_path / "s")


# ----------------------------------------------------------------------------- choosing a recording


def test_a_session_with_two_recordings_is_refused_and_each_can_be_picked(tmp_path):
    for r in (1, 2):
        gui06_recording(tmp_path / "s", streams=(PROBE_AP,), recording=r, first=1000 * r)
    with pytest.raises(UserError) as e:
        open_recording(tmp_path / "s")
    msg = str(e.value)
    for word in ("2 recordings", "'Record Node 101/experiment1/recording1'", "'Record Node 101/experiment1/recording2'",
                 "--recording N", "give its folder"):
        assert word in msg, msg
    for pick in (2, "2", "recording2", "experiment1/recording2", "Record Node 101/experiment1/recording2"):
        rec = open_recording(tmp_path / "s", recording=pick)
        assert rec.path.name == "recording2" and rec.sample_numbers[0] == 2000
    assert open_recording(tmp_path / "s" / "Record Node 101", recording=1).sample_numbers[0] == 1000
    with pytest.raises(UserError, match="no recording 'recording3'.*recording1.*recording2"):
        open_recording(tmp_path / "s", recording="recording3")


def test_recordings_of_several_record_nodes_or_experiments_need_the_path(tmp_path):
    gui06_recording(tmp_path / "s", streams=(PROBE_AP,), node="Record Node 101")
    gui06_recording(tmp_path / "s", streams=(PROBE_AP,), node="Record Node 102", seed=5)
    gui06_recording(tmp_path / "s", streams=(PROBE_AP,), node="Record Node 102", experiment=2, seed=6)
    with pytest.raises(UserError, match="3 recordings"):
        open_recording(tmp_path / "s")
    with pytest.raises(UserError, match="3 recordings match 1.*Record Node 102/experiment2/recording1"):
        open_recording(tmp_path / "s", recording=1)
    rec = open_recording(tmp_path / "s", recording="Record Node 102/experiment2/recording1")
    assert rec.path.parent.name == "experiment2" and rec.path.parent.parent.name == "Record Node 102"


def test_a_folder_inside_a_session_is_not_taken_for_one_of_its_recordings(tmp_path):
    """`simulate --ephys` writes the clean copy under the session: the session still holds one recording."""
    s = simulate_ephys(tmp_path / "sim", n_channels=4, duration=0.05, seed=1)
    assert len(find_oebin(tmp_path / "sim")) == 1
    assert open_recording(tmp_path / "sim").path == s.recording
    assert len(find_oebin(tmp_path)) == 2  # a folder of none of the GUI's layout: searched at any depth


# ----------------------------------------------------------------------------- the written copy


def test_the_copy_keeps_events_sync_messages_settings_other_streams_and_sample_numbers(tmp_path):
    from open_ephys.analysis import Session

    src_rec = gui06_recording(tmp_path / "in", streams=(NIDAQ, PROBE_AP))
    before = tree(tmp_path / "in")
    rec = open_recording(tmp_path / "in")
    out_rec = copy_negated(rec, tmp_path / "out")
    assert tree(tmp_path / "in") == before  # the input is never modified
    assert out_rec == tmp_path / "out" / "Record Node 101" / "experiment1" / "recording1"
    src, out = tree(src_rec), tree(out_rec)
    probe = "continuous/Neuropix-PXI-100.ProbeA-AP/"  # the stream folder keeps its name
    assert sorted(out) == sorted(src)
    for name in src:
        if name == "structure.oebin" or name in (probe + "continuous.dat",):
            continue
        assert out[name] == src[name], name  # events, messages, sync_messages.txt, NI-DAQ stream, .npy per sample
    assert (tmp_path / "out" / "Record Node 101" / "settings.xml").read_bytes() == \
        (tmp_path / "in" / "Record Node 101" / "settings.xml").read_bytes()
    info_in, info_out = json.loads(src["structure.oebin"]), json.loads(out["structure.oebin"])
    note = info_out.pop("livedenoise")
    assert info_out == info_in and note["stream"] == "Neuropix-PXI-100.ProbeA-AP/" and note["description"] == "test"
    den = open_recording(tmp_path / "out", stream="ProbeA-AP")
    np.testing.assert_array_equal(den.read_raw(), -rec.read_raw())
    # the standard reader sees the same recording: events, messages, sample numbers, seconds
    a = Session(str(tmp_path / "in")).recordnodes[0].recordings[0]
    b = Session(str(tmp_path / "out")).recordnodes[0].recordings[0]
    assert len(a.events) == len(b.events) > 0 and a.events.equals(b.events)
    assert a.messages.equals(b.messages) and list(b.messages.message) == ["stimulus on", "stimulus off"]
    for ca, cb in zip(a.continuous, b.continuous):
        assert ca.metadata == cb.metadata
        np.testing.assert_array_equal(cb.sample_numbers, ca.sample_numbers)
        np.testing.assert_array_equal(cb.timestamps, ca.timestamps)
    np.testing.assert_array_equal(b.continuous[1].samples, -a.continuous[1].samples)
    np.testing.assert_array_equal(b.continuous[0].samples, a.continuous[0].samples)


def test_gui04_sample_numbers_are_read_and_written_as_stored_never_rebased(tmp_path):
    se = pytest.importorskip("spikeinterface.extractors", reason="spikeinterface is in the dev extra")
    src_rec = gui04_recording(tmp_path / "in", first=1534000)
    rec = open_recording(tmp_path / "in")
    assert rec.sample_numbers[0] == 1534000 and rec.meta["sample_numbers_file"] == "timestamps.npy"
    assert rec.notes == [] and rec.stream_name == "Neuropix-PXI-100.0"
    out_rec = copy_negated(rec, tmp_path / "out")
    src, out = tree(src_rec), tree(out_rec)
    assert sorted(out) == sorted(src)  # the 0.4 layout: no sample_numbers.npy added, none renamed
    stream = "continuous/Neuropix-PXI-100.0/"
    assert out[stream + "timestamps.npy"] == src[stream + "timestamps.npy"]
    for name in src:
        if name.startswith("events/") or name in ("sync_messages.txt",):
            assert out[name] == src[name], name
    info_out = json.loads(out["structure.oebin"])
    assert info_out.pop("livedenoise") and info_out == json.loads(src["structure.oebin"])
    assert np.array_equal(open_recording(tmp_path / "out").sample_numbers, rec.sample_numbers)
    a, b = se.read_openephys(tmp_path / "in"), se.read_openephys(tmp_path / "out")
    np.testing.assert_array_equal(b.get_times(), a.get_times())
    assert b.get_times()[0] == pytest.approx(1534000 / 30000.0)
    ea, eb = se.read_openephys_event(tmp_path / "in"), se.read_openephys_event(tmp_path / "out")
    ch = ea.channel_ids[0]
    assert len(ea.get_events(ch)) > 0 and np.array_equal(eb.get_events(ch), ea.get_events(ch))


def test_each_recording_of_a_session_keeps_its_name_and_number_in_one_output(tmp_path):
    for r in (1, 2):
        gui06_recording(tmp_path / "in", streams=(PROBE_AP,), recording=r, first=1000 * r)
    assert copy_negated(open_recording(tmp_path / "in", recording=2), tmp_path / "out").name == "recording2"
    assert copy_negated(open_recording(tmp_path / "in", recording=1), tmp_path / "out").name == "recording1"
    node = tmp_path / "out" / "Record Node 101"
    assert sorted(p.name for p in (node / "experiment1").iterdir()) == ["recording1", "recording2"]
    assert sorted(p.name for p in node.iterdir()) == ["experiment1", "settings.xml"]
    for r in (1, 2):
        assert open_recording(tmp_path / "out", recording=r).sample_numbers[0] == 1000 * r
    with pytest.raises(UserError, match="recording2 already exists"):
        writer_like(open_recording(tmp_path / "in", recording=2), tmp_path / "out")
    (node / "settings.xml").write_text("<SETTINGS/>")  # another session's settings: never overwritten
    (node / "experiment1" / "recording1").rename(node / "experiment1" / "old")
    with pytest.raises(UserError, match="settings.xml exists and differs"):
        writer_like(open_recording(tmp_path / "in", recording=1), tmp_path / "out")
    assert not list(tmp_path.glob("out.partial*"))


def test_the_copy_writer_refuses_sample_numbers_that_are_not_the_inputs(tmp_path):
    gui06_recording(tmp_path / "in", streams=(PROBE_AP,))
    rec = open_recording(tmp_path / "in")
    w = OpenEphysCopyWriter(rec, tmp_path / "out")
    with pytest.raises(ValueError, match="not the input's"):
        w.write_raw(rec.read_raw(0, 10), np.arange(10))
    w.abort()
    assert not (tmp_path / "out").exists()


def test_an_output_inside_the_input_recording_is_refused(tmp_path):
    src = gui06_recording(tmp_path / "in", streams=(PROBE_AP,))
    rec = open_recording(src)
    with pytest.raises(UserError, match="inside the input recording"):
        writer_like(rec, src / "den")
    with pytest.raises(UserError, match="holds the input"):
        writer_like(rec, tmp_path)
