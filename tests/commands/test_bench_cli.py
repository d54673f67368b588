"""`livedenoise bench engine` and the `bench` verb's sub-benches."""

import json

from livedenoise.cli import build_parser, main
from livedenoise.export.onnx_export import export_onnx
from tests.export.checkpoints import make_checkpoint


def test_bench_engine_named_model_json(capsys):
    rc = main(["bench", "engine", "--model", "lite", "--frame-shape", "32", "32", "--batch", "1", "2",
               "--backends", "torch", "onnxruntime", "--repeats", "3", "--warmup", "1", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0
    got = {(r["backend"], r["batch"]) for r in data["results"]}
    assert got == {("torch", 1), ("torch", 2), ("onnxruntime", 1), ("onnxruntime", 2)}
    for r in data["results"]:
        assert r["frames_per_s"] > 0 and r["latency_ms_p99"] >= r["latency_ms_p50"] > 0
        assert r["calls"] == 3 and r["precision"] == "fp32"
    assert data["frame_shape"] == [32, 32]
    assert data["command"].startswith("livedenoise bench engine --model lite --frame-shape 32 32 --batch 1 2")


def test_bench_engine_table_lists_skipped_backends(tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "m.pt")
    onnx_path, _ = export_onnx(ckpt, tmp_path / "m.onnx", frame_shape=(24, 24))
    rc = main(["bench", "engine", "--model", str(onnx_path), "--batch", "1", "--repeats", "2", "--warmup", "0"])
    cap = capsys.readouterr()
    out = cap.out
    assert rc == 0
    assert "frames/s" in out and "p50 ms" in out and "p99 ms" in out
    progress = cap.err.splitlines()
    first_row = next(i for i, line in enumerate(progress) if "onnxruntime" in line)
    assert any("backend" in line and "frames/s" in line for line in progress[:first_row])  # a header before the rows
    assert "onnxruntime" in out and "skipped torch: needs the .pt checkpoint" in out


def test_bench_engine_bad_model(capsys):
    assert main(["bench", "engine", "--model", "nonsense", "--batch", "1"]) == 2
    assert "--model" in capsys.readouterr().err


def test_bench_without_subcommand_shows_help(capsys):
    assert main(["bench"]) == 2
    assert "engine" in capsys.readouterr().out


def test_every_bench_registers():
    sub = build_parser()._subparsers._group_actions[0].choices["bench"]._subparsers._group_actions[0].choices
    assert {"engine", "stream", "ephys"} <= set(sub)
