"""`livedenoise bench ephys` runs and reports real-time factors (values are machine-dependent: not asserted)."""

import json

from livedenoise.cli import main


def test_bench_ephys_small(capsys):
    rc = main(["bench", "ephys", "--channels", "32", "--seconds", "0.2", "--budget", "2", "--models", "block-ephys:fast",
               "interp-ephys:lite", "--backends", "torch", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    rows = out["results"]
    assert rows[0]["what"].startswith("ingest") and rows[0]["realtime_factor"] > 0
    assert rows[0]["samples"] >= 0.2 * 30000 - 1024
    models = {(r["model"], r["backend"]): r for r in rows[1:]}
    assert set(models) == {("block-ephys:fast", "torch"), ("interp-ephys:lite", "torch")}
    assert all(r["realtime_factor"] > 0 and r["lag_samples"] == 31 for r in models.values())
