"""Small Open Ephys Binary sessions laid out as the GUI writes them, for the reader, writer and CLI tests.

- `gui06_recording`: GUI 0.6+ (structure.oebin with `stream_name`; per stream `continuous.dat`,
  `sample_numbers.npy` int64, `timestamps.npy` float64 s; events `events/<stream folder>/TTL/`
  states / sample_numbers / full_words / timestamps and `events/MessageCenter/` text / sample_numbers /
  timestamps; `sync_messages.txt`; `settings.xml` in the Record Node folder).
- `gui04_recording`: GUI 0.4.x (`source_processor_sub_idx`, folder `Neuropix-PXI-100.0`, `timestamps.npy`
  int64 *sample numbers*, events `TTL_1/` channel_states / channels / full_words / timestamps).

Source: Open Ephys GUI documentation, "Binary format" (open-ephys.github.io/gui-docs), and the files of
open-ephys-python-tools' test data. The seconds in `timestamps.npy` are deliberately not sample / rate (as
after synchronisation), so a copy that recomputes them instead of carrying them over is caught.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SETTINGS = """<?xml version="1.0" encoding="UTF-8"?>

<SETTINGS>
  <INFO>
    <VERSION>{version}</VERSION>
    <DATE>3 Apr 2025 13:38:24</DATE>
  </INFO>
  <SIGNALCHAIN/>
</SETTINGS>
"""

NIDAQ = {"folder": "NI-DAQmx-102.PXIe-6341", "name": "PXIe-6341", "processor": "NI-DAQmx", "id": 102,
         "channels": [f"AI{k}" for k in range(4)], "units": "V", "bit_volts": 0.00015259}
PROBE_AP = {"folder": "Neuropix-PXI-100.ProbeA-AP", "name": "ProbeA-AP", "processor": "Neuropix-PXI", "id": 100,
            "channels": [f"CH{k + 1}" for k in range(8)], "units": "uV", "bit_volts": 0.195}
PROBE_LFP = {**PROBE_AP, "folder": "Neuropix-PXI-100.ProbeA-LFP", "name": "ProbeA-LFP", "rate": 2500.0}


def stream_data(n: int, n_ch: int, seed: int) -> np.ndarray:
    """(n, n_ch) int16: noise plus a square wave on channel 0, different for every seed."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 60, (n, n_ch))
    x[:, 0] += (np.arange(n) // 500 % 2) * 400
    return np.rint(x).astype("<i2")


def _stream_entry(s: dict, rate: float, gui04: bool = False) -> dict:
    entry = {"folder_name": s["folder"] + "/", "sample_rate": rate, "source_processor_name": s["processor"],
             "source_processor_id": s["id"]}
    entry.update({"source_processor_sub_idx": 0} if gui04 else {"stream_name": s["name"]})
    entry.update({"recorded_processor": "Record Node", "recorded_processor_id": 101, "num_channels": len(s["channels"]),
                  "channels": [{"channel_name": c, "description": "", "identifier": "", "history": s["processor"],
                                "bit_volts": s["bit_volts"], "units": s["units"]} for c in s["channels"]]})
    return entry


def gui06_recording(session: Path, streams=(NIDAQ, PROBE_AP), recording: int = 1, experiment: int = 1,
                    node: str = "Record Node 101", n: int = 3000, first: int = 251635, seed: int = 0) -> Path:
    """A GUI 0.6.7 recording `session/<node>/experimentE/recordingR` with `streams` in that order; returns it."""
    rec = Path(session) / node / f"experiment{experiment}" / f"recording{recording}"
    (rec / "continuous").mkdir(parents=True)
    settings = rec.parent.parent / ("settings.xml" if experiment == 1 else f"settings_{experiment}.xml")
    if not settings.exists():
        settings.write_text(SETTINGS.format(version="0.6.7"))
    entries = []
    for k, s in enumerate(streams):
        rate = s.get("rate", 30000.0)
        d = rec / "continuous" / s["folder"]
        d.mkdir()
        stream_data(n, len(s["channels"]), seed + 10 * recording + k).tofile(d / "continuous.dat")
        sn = np.arange(first, first + n, dtype=np.int64)
        np.save(d / "sample_numbers.npy", sn)
        np.save(d / "timestamps.npy", 1700.25 + sn / rate * 1.00002)  # synchronised seconds, not sn / rate
        entries.append(_stream_entry(s, rate))
    probe = streams[-1]
    ttl = rec / "events" / probe["folder"] / "TTL"
    ttl.mkdir(parents=True)
    ev = np.arange(first + 100, first + n, 400, dtype=np.int64)
    np.save(ttl / "sample_numbers.npy", ev)
    np.save(ttl / "states.npy", np.where(np.arange(len(ev)) % 2 == 0, 1, -1).astype(np.int16))
    np.save(ttl / "full_words.npy", (np.arange(len(ev)) % 2).astype(np.uint64))
    np.save(ttl / "timestamps.npy", 1700.25 + ev / 30000.0 * 1.00002)
    msg = rec / "events" / "MessageCenter"
    msg.mkdir()
    np.save(msg / "text.npy", np.array([b"stimulus on", b"stimulus off"]))
    np.save(msg / "sample_numbers.npy", np.array([first + 10, first + 2000], np.int64))
    np.save(msg / "timestamps.npy", 1700.25 + np.array([first + 10, first + 2000]) / 30000.0)
    events = [{"folder_name": probe["folder"] + "/TTL/", "channel_name": "TTL Input", "description": "",
               "identifier": "", "sample_rate": 30000.0, "type": "int16", "source_processor": probe["processor"],
               "stream_name": probe["name"], "initial_state": 0},
              {"folder_name": "MessageCenter/", "channel_name": "Messages", "description": "", "identifier":
               "messagecenter.events", "sample_rate": 30000.0, "type": "string", "source_processor": "Message Center",
               "stream_name": probe["name"]}]
    (rec / "structure.oebin").write_text(json.dumps({"GUI version": "0.6.7", "continuous": entries,
                                                     "events": events, "spikes": []}, indent=4))
    lines = ["Software Time (milliseconds since midnight Jan 1st 1970 UTC): 1743680304611"]
    lines += [f"Start Time for {s['processor']} ({s['id']}) - {s['name']} @ {int(s.get('rate', 30000))} Hz: {first}"
              for s in streams]
    (rec / "sync_messages.txt").write_text("\r\n".join(lines) + "\r\n")
    return rec


def gui04_recording(session: Path, n: int = 3000, first: int = 1534000, seed: int = 4) -> Path:
    """A GUI 0.4.6 recording (one Neuropixels AP stream, `timestamps.npy` = int64 sample numbers); returns it."""
    s = {**PROBE_AP, "folder": "Neuropix-PXI-100.0"}
    rec = Path(session) / "Record Node 101" / "experiment1" / "recording1"
    d = rec / "continuous" / s["folder"]
    d.mkdir(parents=True)
    (rec.parent.parent / "settings.xml").write_text(SETTINGS.format(version="0.4.6"))
    stream_data(n, len(s["channels"]), seed).tofile(d / "continuous.dat")
    np.save(d / "timestamps.npy", np.arange(first, first + n, dtype=np.int64))
    ttl = rec / "events" / s["folder"] / "TTL_1"
    ttl.mkdir(parents=True)
    ev = np.arange(first + 100, first + n, 400, dtype=np.int64)
    np.save(ttl / "timestamps.npy", ev)
    np.save(ttl / "channel_states.npy", np.where(np.arange(len(ev)) % 2 == 0, 1, -1).astype(np.int16))
    np.save(ttl / "channels.npy", np.ones(len(ev), np.int16))
    np.save(ttl / "full_words.npy", (np.arange(len(ev)) % 2).astype(np.uint8))
    info = {"GUI version": "0.4.6", "continuous": [_stream_entry(s, 30000.0, gui04=True)],
            "events": [{"folder_name": s["folder"] + "/TTL_1/", "channel_name": "Neuropixels PXI Sync",
                        "description": "", "identifier": "", "sample_rate": 30000, "type": "int16", "num_channels": 1,
                        "source_processor": s["processor"]}],
            "spikes": []}
    (rec / "structure.oebin").write_text(json.dumps(info, indent=2))
    (rec / "sync_messages.txt").write_text(
        f"Software time: 1615406853016@1000Hz\nProcessor: Neuropix-PXI Id: 100 subProcessor: 0 start time: "
        f"{first}@30000Hz\n")
    return rec


def tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` (relative POSIX path -> bytes)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}
