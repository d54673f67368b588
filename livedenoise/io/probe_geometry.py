"""Owns where a recording's sites are: (channels, 2) positions in µm, from the recording's own metadata.

Sources, in order (probeinterface, github.com/SpikeInterface/probeinterface,
reads every format):

- a probeinterface file the user names (`--probe probe.json`, also `.prb`);
- `Recording.meta["positions"]`, when whoever made the Recording set them;
- Open Ephys Binary: the `settings*.xml` of the Record Node (or session) above the
  recording folder (`probeinterface.read_openephys`, the Neuropixels plugins' probe
  and electrode selection), for the recording's stream;
- SpikeGLX: the `.meta` beside the `.bin` (`probeinterface.read_spikeglx`:
  `~snsGeomMap`, else `~imroTbl` with the probe part number).

Nothing is guessed: `site_positions` returns None when the metadata holds no
geometry, and `require_positions` turns that into a UserError naming the flag.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from livedenoise.errors import UserError


NP1_X_UM = (43.0, 11.0, 59.0, 27.0)
"""Neuropixels 1.0 site x positions (µm) of channels 0, 1, 2, 3 (then repeating); rows 20 µm apart, two sites a row."""


def np1_positions(n: int) -> np.ndarray:
    """(n, 2) µm: Neuropixels 1.0 bank-0 sites in channel order (IMEC's staggered layout), for
    synthetic recordings and benchmarks; a real recording's geometry comes from `site_positions`."""
    k = np.arange(int(n))
    return np.stack([np.asarray(NP1_X_UM)[k % 4], (k // 2) * 20.0], axis=1)


def _ordered(probe, n: int | None) -> np.ndarray | None:
    """A probeinterface Probe's contact positions in channel order ((n, 2) µm), or None when they do not fit."""
    pos = np.asarray(probe.contact_positions, np.float64)[:, :2]
    dci = getattr(probe, "device_channel_indices", None)
    if dci is not None:
        dci = np.asarray(dci, np.int64)
        keep = dci >= 0
        order = np.argsort(dci[keep], kind="stable")
        pos, dci = pos[keep][order], dci[keep][order]
        if len(dci) and not np.array_equal(dci, np.arange(len(dci))):
            return None  # channels without a contact in between: not one position per channel
    if n is not None and len(pos) != n:
        return None
    return pos


def read_probe_file(path: str | os.PathLike, n_channels: int | None = None) -> np.ndarray:
    """(n_channels, 2) µm from a probeinterface JSON (or a .prb); UserError when unreadable or of another size."""
    import probeinterface as pi

    p = Path(path)
    try:
        group = pi.read_prb(p) if p.suffix.lower() == ".prb" else pi.read_probeinterface(p)
    except Exception as exc:  # noqa: BLE001 - any parse failure of a user file is one line
        raise UserError(f"{p}: not a probeinterface probe file ({type(exc).__name__}: {exc})") from None
    probes = list(group.probes)
    if len(probes) != 1:
        raise UserError(f"{p}: holds {len(probes)} probes; give a file with the one probe of this recording")
    pos = _ordered(probes[0], n_channels)
    if pos is None:
        raise UserError(f"{p}: its probe has {probes[0].get_contact_count()} wired contacts, the recording "
                        f"{n_channels} channels")
    return pos


def _settings_files(rec) -> list[Path]:
    here = Path(rec.path)
    out: list[Path] = []
    for level in [here, *here.parents][:4]:  # recordingN, experimentN, Record Node, session
        out += sorted(q for q in level.glob("settings*.xml") if q.is_file())
    return out


def site_positions(rec, probe: str | os.PathLike | None = None, n_channels: int | None = None) -> tuple[np.ndarray | None, str]:
    """((n, 2) µm positions or None, where they came from) for the recording's first n channels
    (default: all; SpikeGLX: its neural channels)."""
    if n_channels is None:
        neural = rec.meta.get("neural_channels") if rec.format == "spikeglx" else None
        n_channels = len(neural) if neural else rec.n_channels
    if probe is not None:
        return read_probe_file(probe, n_channels), str(probe)
    given = rec.meta.get("positions")
    if given is not None:
        pos = np.asarray(given, np.float64)
        if pos.shape == (n_channels, 2):
            return pos, "the recording's positions"
    try:
        import probeinterface as pi
    except ImportError:  # pragma: no cover - a runtime dependency
        return None, "probeinterface is not installed"
    if rec.format == "openephys":
        for f in _settings_files(rec):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    pr = pi.read_openephys(f, stream_name=rec.stream_name or None, raise_error=False)
                except Exception:  # noqa: BLE001 - a settings file probeinterface cannot parse holds no geometry for us
                    pr = None
            pos = _ordered(pr, n_channels) if pr is not None else None
            if pos is not None:
                return pos, str(f)
    if rec.format == "spikeglx":
        meta = Path(rec.path).with_suffix(".meta")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                pr = pi.read_spikeglx(meta)
            except Exception:  # noqa: BLE001
                pr = None
        pos = _ordered(pr, n_channels) if pr is not None else None
        if pos is not None:
            return pos, str(meta)
    return None, "no probe geometry in the recording's metadata"


def require_positions(rec, probe: str | os.PathLike | None = None, n_channels: int | None = None,
                      what: str = "this model") -> np.ndarray:
    """`site_positions`, or UserError naming `--probe` when the recording holds no geometry."""
    pos, _ = site_positions(rec, probe, n_channels)
    if pos is None:
        raise UserError(f"{rec.path}: {what} needs the probe geometry and the recording's metadata has none "
                        "(Open Ephys settings.xml, SpikeGLX .meta); pass --probe FILE (a probeinterface .json or .prb) "
                        "or use --arch block-ephys")
    return pos
