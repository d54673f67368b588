"""A synthetic Neuropixels-like recording with ground-truth spikes.

Probe: Neuropixels 1.0 geometry (staggered sites, x in {43, 11, 59, 27} µm,
20 µm rows). Units sit near the probe; each has a biphasic extracellular
waveform (sharp trough, slower repolarisation peak) whose amplitude falls off
with distance from the unit, so a spike covers a handful of neighbouring sites.
Spike trains are Poisson with a 2 ms refractory period.

Noise has two parts: a background that is correlated across nearby sites and
band-limited in time (distant activity), plus independent white thermal noise on
every site. Thermal noise is what self-supervised denoising can remove.

`simulate_ephys(out, ...)` writes an Open Ephys Binary session (int16, 0.195
µV/bit), `ground_truth.npz` beside it, and optionally the clean signal as a
second session; generation is chunked, so long recordings stream to disk.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from livedenoise.io.writers_ephys import BinaryWriter

NP1_X = np.array([43.0, 11.0, 59.0, 27.0])


def probe_geometry(n_channels: int) -> np.ndarray:
    """(channels, 2) site positions in µm, Neuropixels 1.0 style."""
    k = np.arange(n_channels)
    return np.stack([NP1_X[k % 4], 20.0 * (k // 2)], axis=1)


def waveform(t_ms: np.ndarray, width: float, repol: float, ratio: float) -> np.ndarray:
    """Unit-trough biphasic extracellular spike shape (negative trough at t=0)."""
    trough = -np.exp(-0.5 * (t_ms / width) ** 2)
    peak = ratio * np.exp(-0.5 * ((t_ms - 2.2 * width - 0.15) / repol) ** 2)
    w = trough + peak
    w[t_ms < -4 * width] = 0.0
    return w / np.abs(w.min())


@dataclass
class GroundTruth:
    spike_samples: np.ndarray
    spike_units: np.ndarray
    unit_positions: np.ndarray
    unit_amplitudes: np.ndarray
    templates: np.ndarray
    """(units, template_len) temporal shape of each unit, trough = -1."""
    footprints: np.ndarray
    """(units, channels) peak amplitude in µV on each site."""
    template_offset: int
    """Index of the trough inside a template."""
    geometry: np.ndarray
    sample_rate: float

    def save(self, path: str | os.PathLike) -> None:
        np.savez_compressed(
            path,
            spike_samples=self.spike_samples,
            spike_units=self.spike_units,
            unit_positions=self.unit_positions,
            unit_amplitudes=self.unit_amplitudes,
            templates=self.templates,
            footprints=self.footprints,
            template_offset=self.template_offset,
            geometry=self.geometry,
            sample_rate=self.sample_rate,
        )


class EphysSimulator:
    def __init__(
        self,
        n_channels: int = 384,
        n_samples: int = 60000,
        sample_rate: float = 30000.0,
        n_units: int | None = None,
        thermal_uv: float = 8.0,
        background_uv: float = 5.0,
        amplitude_uv: tuple[float, float] = (60.0, 250.0),
        rate_hz: tuple[float, float] = (2.0, 20.0),
        seed: int = 0,
    ):
        self.n_channels, self.n_samples, self.fs = int(n_channels), int(n_samples), float(sample_rate)
        self.thermal, self.background = float(thermal_uv), float(background_uv)
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.geom = probe_geometry(self.n_channels)
        n_units = int(n_units if n_units is not None else max(1, self.n_channels // 6))
        ymax = self.geom[:, 1].max()
        pos = np.stack([rng.uniform(-20, 80, n_units), rng.uniform(0, ymax + 1e-9, n_units)], axis=1)
        amps = np.exp(rng.uniform(np.log(amplitude_uv[0]), np.log(amplitude_uv[1]), n_units))
        # templates: 2 ms at any rate, trough at 0.6 ms
        self.pre_t = int(round(0.6e-3 * self.fs))
        tlen = self.pre_t + int(round(1.6e-3 * self.fs))
        t_ms = (np.arange(tlen) - self.pre_t) / self.fs * 1e3
        temps = np.stack(
            [waveform(t_ms, rng.uniform(0.08, 0.16), rng.uniform(0.2, 0.45), rng.uniform(0.25, 0.6)) for _ in range(n_units)]
        )
        d = np.sqrt(((self.geom[None, :, :] - pos[:, None, :]) ** 2).sum(-1) + 15.0**2)  # 15 µm off the shank plane
        foot = amps[:, None] * (15.0 / d) ** 2
        foot[foot < 0.05 * amps[:, None]] = 0.0
        # spike trains
        times, units = [], []
        for u in range(n_units):
            rate = np.exp(rng.uniform(np.log(rate_hz[0]), np.log(rate_hz[1])))
            n = rng.poisson(rate * self.n_samples / self.fs * 1.2) + 1
            isi = rng.exponential(self.fs / rate, n) + 0.002 * self.fs
            st = np.cumsum(isi).astype(np.int64)
            st = st[st < self.n_samples]
            times.append(st)
            units.append(np.full(len(st), u, np.int64))
        st = np.concatenate(times) if times else np.zeros(0, np.int64)
        su = np.concatenate(units) if units else np.zeros(0, np.int64)
        order = np.argsort(st, kind="stable")
        self.truth = GroundTruth(st[order], su[order], pos, amps, temps, foot, self.pre_t, self.geom, self.fs)
        from scipy import signal

        # background: spatial mixing (Gaussian over site distance) of white sources, band-passed in time
        dd = np.sqrt(((self.geom[:, None, :] - self.geom[None, :, :]) ** 2).sum(-1))
        mix = np.exp(-0.5 * (dd / 40.0) ** 2)
        mix /= np.sqrt((mix**2).sum(1, keepdims=True))
        self.mix = mix.astype(np.float32)
        nyq = self.fs / 2
        hi = min(3000.0, 0.45 * self.fs) / nyq
        self.sos = signal.butter(2, [300.0 / nyq, hi], btype="band", output="sos")
        self.zi = np.zeros((self.sos.shape[0], 2, self.n_channels))
        # band-passed white noise has variance < 1; measure the gain once to hit background_uv rms
        probe = signal.sosfilt(self.sos, rng.standard_normal(20000))
        self.bg_gain = 1.0 / max(1e-6, probe[2000:].std())

    def chunks(self, chunk: int = 30000) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Yield (start, noisy µV, clean µV) float32 chunks in order."""
        tr = self.truth
        tlen = tr.templates.shape[1]
        rng = self.rng
        for a in range(0, self.n_samples, chunk):
            b = min(self.n_samples, a + chunk)
            clean = np.zeros((b - a, self.n_channels), np.float32)
            lo = np.searchsorted(tr.spike_samples, a - tlen)
            hi = np.searchsorted(tr.spike_samples, b + tlen)
            for s, u in zip(tr.spike_samples[lo:hi], tr.spike_units[lo:hi]):
                s0 = int(s) - self.pre_t
                i0, i1 = max(s0, a), min(s0 + tlen, b)
                if i0 >= i1:
                    continue
                chans = np.nonzero(tr.footprints[u])[0]
                w = tr.templates[u, i0 - s0:i1 - s0]
                clean[i0 - a:i1 - a][:, chans] += np.outer(w, tr.footprints[u, chans]).astype(np.float32)
            from scipy import signal

            white = rng.standard_normal((b - a, self.n_channels)).astype(np.float32) @ self.mix
            bg, self.zi = signal.sosfilt(self.sos, white, axis=0, zi=self.zi)
            noisy = clean + (bg * (self.background * self.bg_gain)).astype(np.float32)
            noisy += rng.standard_normal(noisy.shape).astype(np.float32) * self.thermal
            yield a, noisy, clean


def simulate_ephys_arrays(n_channels: int = 32, n_samples: int = 30000, sample_rate: float = 30000.0, seed: int = 0,
                          **kw) -> tuple[np.ndarray, np.ndarray, GroundTruth]:
    """In-memory (noisy µV, clean µV, truth) for tests and small experiments."""
    sim = EphysSimulator(n_channels, n_samples, sample_rate, seed=seed, **kw)
    noisy = np.empty((n_samples, n_channels), np.float32)
    clean = np.empty_like(noisy)
    for a, x, c in sim.chunks():
        noisy[a:a + len(x)] = x
        clean[a:a + len(c)] = c
    return noisy, clean, sim.truth


@dataclass
class SimulatedRecording:
    session: Path
    """The Open Ephys session folder (open with `open_recording` or `Session`)."""
    recording: Path
    ground_truth: Path
    clean_session: Path | None
    truth: GroundTruth


def simulate_ephys(
    out: str | os.PathLike,
    n_channels: int = 384,
    duration: float = 10.0,
    sample_rate: float = 30000.0,
    n_units: int | None = None,
    thermal_uv: float = 8.0,
    background_uv: float = 5.0,
    seed: int = 0,
    bit_volts: float = 0.195,
    save_clean: bool = True,
    stream_name: str = "ProbeA-AP",
) -> SimulatedRecording:
    """Write a synthetic recording under `out` (see module doc)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n = int(round(duration * sample_rate))
    sim = EphysSimulator(n_channels, n, sample_rate, n_units, thermal_uv, background_uv, seed=seed)
    bv = np.full(n_channels, bit_volts)
    names = [f"CH{k + 1}" for k in range(n_channels)]
    desc = f"livedenoise simulate --ephys seed={seed} thermal={thermal_uv}uV background={background_uv}uV"
    w = BinaryWriter(out, sample_rate, bv, names, stream_name=stream_name, source_processor_name="Simulator",
                     description=desc)
    wc = BinaryWriter(out / "clean", sample_rate, bv, names, stream_name=stream_name, source_processor_name="Simulator",
                      description=desc + " (clean)") if save_clean else None
    try:
        for a, noisy, clean in sim.chunks():
            w.write(noisy)
            if wc is not None:
                wc.write(clean)
    finally:
        w.close()
        if wc is not None:
            wc.close()
    gt = out / "ground_truth.npz"
    sim.truth.save(gt)
    (out / "simulation.json").write_text(json.dumps({
        "n_channels": n_channels, "duration_s": duration, "sample_rate": sample_rate, "n_units": len(sim.truth.unit_amplitudes),
        "n_spikes": int(len(sim.truth.spike_samples)), "thermal_uv": thermal_uv, "background_uv": background_uv, "seed": seed,
        "bit_volts": bit_volts, "recording": str(w.path.relative_to(out)),
        "clean": str(wc.path.relative_to(out)) if wc is not None else None,
    }, indent=2))
    return SimulatedRecording(out, w.path, gt, (out / "clean") if wc is not None else None, sim.truth)
