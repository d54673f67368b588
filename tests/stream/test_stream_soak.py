"""Memory stays flat in steady state: no per-frame growth in the ring, queues, recorder or stats."""

import threading
import time

import numpy as np
import psutil
import pytest
from streamkit import MeanEngine, RawPublisher, RunningService, cfg_factory, frame_parts, lite_card, make_checkpoint  # noqa: F401

from livedenoise.export.engines import TorchEngine


class RssSampler:
    def __init__(self):
        self.proc = psutil.Process()
        self.samples: list[tuple[int, int]] = []  # (frames_in, rss)
        self.stop = threading.Event()

    def run(self, svc):
        while not self.stop.is_set():
            self.samples.append((svc.service.stats.frames_in, self.proc.memory_info().rss))
            time.sleep(0.05)

    def growth_after(self, warm: int) -> float:
        """MB between the median RSS of the first and of the last quarter of the samples after warm-up.

        Medians, because the allocator moves RSS up and down by several MB (PyTorch's in particular)
        without anything accumulating; a leak shows as a steady rise between the two quarters.
        """
        after = [r for n, r in self.samples if n >= warm]
        assert len(after) >= 8, "too few memory samples"
        q = len(after) // 4
        return float(np.median(after[-q:]) - np.median(after[:q])) / 2**20


def soak(tmp_path, cfg_factory, engine, n, shape, fps, warm, record=True):
    cfg = cfg_factory(record=str(tmp_path / "rec") if record else None, ring=256, max_batch=8)
    svc = RunningService(cfg, engine)
    pub = RawPublisher(cfg.input)
    sampler = RssSampler()
    th = threading.Thread(target=sampler.run, args=(svc,), daemon=True)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 1000, shape).astype(np.int16) for _ in range(16)]
    try:
        pub.wait_subscriber()
        th.start()
        t0 = time.perf_counter()
        for k in range(n):
            due = t0 + k / fps
            while (now := time.perf_counter()) < due:
                time.sleep(min(0.001, due - now))
            pub.send(frame_parts(k, frames[k % 16]))
        svc.wait_frames_in(n, timeout=60)
        svc.wait_idle(60)
        final = svc.stop()
    finally:
        sampler.stop.set()
        pub.close()
        if svc.thread.is_alive():
            svc.stop()
    return final, sampler


def test_short_soak_memory_is_flat(tmp_path, cfg_factory):
    final, sampler = soak(tmp_path, cfg_factory, MeanEngine(lite_card(2, 0)), 1500, (64, 64), fps=600, warm=300)
    assert final["frames_in"] == 1500 and final["record_dropped"] == 0
    assert final["frames_out"] + final["overflow"] == 1500 and final["overflow"] < 150  # a load spike may cost a few
    growth = sampler.growth_after(300)
    assert growth < 8, f"RSS grew {growth:.1f} MB after warm-up"


@pytest.mark.slow
def test_soak_10000_frames_at_the_highest_sustained_rate(tmp_path, cfg_factory):
    model = make_checkpoint(tmp_path / "m.pt", pre=3, post=1)
    engine = TorchEngine.from_checkpoint(model)
    shape = (32, 32)
    x = np.zeros((8, engine.card.n_inputs, *shape), np.float32)
    engine.run(x)
    t = time.perf_counter()
    for _ in range(3):
        engine.run(x)
    per_frame = (time.perf_counter() - t) / 24
    fps = min(2000.0, 0.5 / per_frame)  # half the engine's batched throughput: sustained on a quiet machine
    final, sampler = soak(tmp_path, cfg_factory, engine, 10_000, shape, fps=fps, warm=2000)
    growth = sampler.growth_after(2000)
    print(f"soak at {fps:.0f} frames/s: RSS growth after warm-up {growth:.1f} MB; "
          + ", ".join(f"{k} {final[k]}" for k in ("frames_in", "frames_out", "overflow", "latency_ms_p50", "latency_ms_p99")))
    assert final["frames_in"] == 10_000 and final["record_dropped"] == 0
    # on a shared machine a load spike may cost some frames (counted as overflow), never memory
    assert final["frames_out"] + final["overflow"] == 10_000 and final["skipped"] == 0
    assert final["overflow"] < 1000
    assert growth < 20, f"RSS grew {growth:.1f} MB after warm-up"
