"""`livedenoise bench stream` building blocks on a cheap engine (the real numbers are in docs/benchmarks.md)."""

from streamkit import MeanEngine, lite_card

from livedenoise.stream.bench import add_ratios, markdown_table, run_once, sustained


def test_run_once_measures_latency_and_counts():
    # policy "all" (the ring holds every frame): a load spike delays frames, never skips them
    r = run_once(MeanEngine(lite_card(2, 1)), (16, 16), fps=100, seconds=0.4, max_batch=16, policy="all")
    assert r["frames"] == 40 and r["frames_out"] == 40 and r["skipped"] == r["overflow"] == 0
    assert 0 < r["latency_ms_p50"] <= r["latency_ms_p99"] and r["latency_ms_p50"] < 2000  # milliseconds
    assert r["latency_growth_ms"] is not None


def test_run_once_with_the_innovation_step_denoises_every_frame():
    r = run_once(MeanEngine(lite_card(2, 1)), (16, 16), fps=100, seconds=0.4, max_batch=16, innovation=True,
                 policy="all")
    assert r["frames"] == 40 and r["frames_out"] == 40 and r["skipped"] == r["overflow"] == 0


def test_a_slow_engine_is_not_sustained():
    r = run_once(MeanEngine(lite_card(2, 0), sleep_s=0.05), (16, 16), fps=200, seconds=0.5, max_batch=2)
    assert not sustained(r) and r["skipped"] > 0


def test_markdown_table():
    row = {"model": "m.pt", "lag": 1, "backend": "torch", "size": 256, "latency_fps": 30, "latency_ms_p50": 12.5,
           "latency_ms_p99": 20.0, "max_sustained_fps": 41.0, "x_lite": 2.5, "gmac_per_frame": 1.9,
           "gflops_sustained": 155.8, "peak_gflops": 180.0}
    assert "| m.pt | 1 | torch | 256x256 | 30 | 12.5 / 20.0 | 41 | 2.5 | 1.9 | 155.8 (180) |" in markdown_table([row])


def test_each_rate_is_compared_with_lites_in_the_same_configuration():
    def row(preset, backend, size, innovation, fps):
        return {"preset": preset, "backend": backend, "size": size, "innovation": innovation, "max_sustained_fps": fps}

    rows = [row("fast", "onnxruntime", 512, True, 30.0), row("lite", "onnxruntime", 512, True, 10.0),
            row("fast", "onnxruntime", 512, False, 36.0), row("lite", "onnxruntime", 512, False, 12.0),
            row("fast", "torch", 512, False, 9.0)]
    add_ratios(rows)
    assert [r["x_lite"] for r in rows] == [3.0, 1.0, 3.0, 1.0, None]

