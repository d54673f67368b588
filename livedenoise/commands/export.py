"""`livedenoise export MODEL --onnx OUT.onnx [--tensorrt OUT.engine ...]`: export and check parity.

Every export is followed by a parity report against the PyTorch model (a
table, or JSON with --json). A failed check removes the file it made and exits
with status 2. See docs/export.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from livedenoise.errors import UserError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a trained model to ONNX / TensorRT and check parity",
        description=(
            "Export a livedenoise checkpoint (.pt) to ONNX (opset >= 17, model card embedded, dynamic batch, fixed frame "
            "size) and optionally build a TensorRT engine from it; or build an engine from an existing export (.onnx). "
            "A parity report against the PyTorch model follows every export."
        ),
    )
    p.add_argument("model", metavar="MODEL", help="checkpoint (.pt) or an ONNX file made by livedenoise (for --tensorrt)")
    p.add_argument("--onnx", metavar="OUT.onnx", help="write the ONNX export here")
    p.add_argument(
        "--frame-shape", nargs=2, type=int, metavar=("H", "W"),
        help="frame size to export at (default: the card's, else the --check/--calibrate movie's)",
    )
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, >= 17 (default 17)")
    p.add_argument("--tensorrt", metavar="OUT.engine", help="also build a TensorRT engine (needs an NVIDIA GPU and the tensorrt extra)")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32", help="TensorRT precision (default fp32)")
    p.add_argument("--calibrate", metavar="MOVIE", help="movie whose frames calibrate int8 (and are used for parity without --check)")
    p.add_argument("--max-batch", type=int, default=16, help="largest batch the TensorRT profile accepts (1..N, default 16)")
    p.add_argument("--workspace", type=float, default=4.0, metavar="GiB", help="TensorRT builder workspace limit (default 4 GiB)")
    p.add_argument(
        "--tolerance", type=float, default=None,
        help="max relative error for fp16/int8 engines (default 1e-2 for fp16, 1e-1 for int8)",
    )
    p.add_argument("--check", metavar="MOVIE", help="movie whose frames the parity check runs on (default: a simulated movie)")
    p.add_argument("--windows", type=int, default=8, help="windows compared in the parity check (default 8)")
    p.add_argument("--calibrate-windows", type=int, default=32, help="windows used for int8 calibration (default 32)")
    b = p.add_argument_group("BioImage Model Zoo (Fiji/deepImageJ, napari, Icy)")
    b.add_argument("--bioimageio", metavar="OUT.zip",
                   help="write a BioImage Model Zoo package: rdf.yaml with the model card, TorchScript + ONNX weights, "
                        "test input/output, cover, README; validated with bioimageio.spec (the bioimageio extra)")
    b.add_argument("--license", default=None, metavar="SPDX",
                   help="license of the packaged weights (default MIT; required for weights imported from another tool)")
    b.add_argument("--author", action="append", default=None, metavar="NAME", help="package author (repeatable)")
    b.add_argument("--name", default=None, help="model name shown in the zoo (default from the card)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def _movie_frame_shape(path) -> tuple[int, int] | None:
    if path is None:
        return None
    from livedenoise.io.readers import open_movie

    with open_movie(path) as mv:
        return mv.frame_shape


def _say(args, text: str) -> None:
    print(text, file=sys.stderr if args.json else sys.stdout, flush=True)


def _bioimageio(args, model: Path, suffix: str) -> None:
    import json

    from livedenoise.export.bioimageio import export_bioimageio

    if suffix != ".pt":
        raise UserError(f"--bioimageio packages a checkpoint (.pt), not {model.name}")
    report = export_bioimageio(model, args.bioimageio, frame_shape=args.frame_shape, movie=args.check,
                               license=args.license, authors=args.author, name=args.name, opset=args.opset)
    if args.json and not (args.onnx or args.tensorrt):
        print(json.dumps({"bioimageio": report}, indent=2))
        return
    par = ", ".join(f"{k} max_rel {v:.2g}" for k, v in report["parity"].items())
    _say(args, f"bioimageio: {report['path']} ({report['frame_shape'][0]}x{report['frame_shape'][1]}, format "
               f"{report['format_version']}, license {report['license']}; {par} <= {report['limit']:.0e}; normalisation "
               f"{report['norm']['from']}); validated with bioimageio.spec")


def run(args: argparse.Namespace) -> int:
    from livedenoise.export import parity
    from livedenoise.export.engines.base import read_onnx_card
    from livedenoise.export.engines.onnxruntime import OnnxRuntimeEngine
    from livedenoise.export.engines.tensorrt import require_tensorrt
    from livedenoise.export.engines.torch import TorchEngine
    from livedenoise.export.onnx_export import export_onnx, onnx_info, resolve_frame_shape

    model = Path(args.model)
    suffix = model.suffix.lower()
    if suffix not in (".pt", ".onnx"):
        raise UserError(f"{model}: give a livedenoise checkpoint (.pt) or an ONNX export (.onnx)")
    if not model.is_file():
        raise UserError(f"model file {model} does not exist; check the path")
    if suffix == ".onnx" and args.onnx:
        raise UserError(f"{model} is already an ONNX file; drop --onnx (use --tensorrt OUT.engine to build an engine from it)")
    if not args.onnx and not args.tensorrt and not args.bioimageio:
        raise UserError("nothing to export: give --onnx OUT.onnx, --tensorrt OUT.engine and/or --bioimageio OUT.zip")
    if args.bioimageio:
        _bioimageio(args, model, suffix)
        if not args.onnx and not args.tensorrt:
            return 0
    if args.precision == "int8" and not args.tensorrt:
        raise UserError("--precision int8 applies to TensorRT engines: add --tensorrt OUT.engine")
    if args.precision == "int8" and not args.calibrate:
        raise UserError("int8 engines need calibration frames: add --calibrate MOVIE")
    if args.tensorrt:
        require_tensorrt()  # fail before any work when TensorRT/pycuda/GPU are missing
    if args.windows < 1:
        raise UserError("--windows must be >= 1")
    if args.tolerance is not None and not args.tolerance > 0:
        raise UserError("--tolerance must be > 0")

    check_movie = args.check or args.calibrate
    report: dict = {"model": str(model)}
    results: list = []
    made: list[Path] = []

    # -- reference (torch) and ONNX
    if suffix == ".pt":
        from livedenoise.models.checkpoint import load_model

        card, net = load_model(model)
        fs = resolve_frame_shape(card, args.frame_shape, _movie_frame_shape(check_movie))
        onnx_path = Path(args.onnx) if args.onnx else Path(args.tensorrt).with_suffix(".onnx")
        onnx_path, card = export_onnx(model, onnx_path, frame_shape=fs, opset=args.opset)
        made.append(onnx_path)
        reference = TorchEngine(card, net, "cpu")
        ref_name = "torch (CPU, fp32)"
    else:
        card = read_onnx_card(model)
        fs = resolve_frame_shape(card, None)
        if args.frame_shape and tuple(args.frame_shape) != tuple(fs):
            raise UserError(f"{model} was exported for {fs[0]}x{fs[1]} frames; export the checkpoint again with --frame-shape for another size")
        onnx_path = model
        reference = None
        ref_name = "onnxruntime (CPU, fp32) of the ONNX file"
    info = onnx_info(onnx_path)
    report.update(
        frame_shape=list(fs), card=card.to_dict(),
        onnx={"path": str(onnx_path), "opset": info["opset"], "input": info["input"], "output": info["output"]},
    )
    windows, source = parity.movie_windows(card, fs, check_movie, n=args.windows)
    ort = OnnxRuntimeEngine(onnx_path, "CPUExecutionProvider", reason="parity check")
    if reference is None:
        reference = ort
    ref_out = parity.run_batched(reference, windows, 4)
    if suffix == ".pt":
        results.append(
            parity.check(ref_out, ort, windows, target="onnx", path=onnx_path, limit=parity.limit_for("onnx", "fp32"), source=source)
        )

    # -- TensorRT
    if args.tensorrt and all(r.ok for r in results):
        from livedenoise.export.engines.tensorrt import TensorRTEngine
        from livedenoise.export.tensorrt_build import build_engine

        engine_path = Path(args.tensorrt)
        calib = None
        calib_source = ""
        if args.precision == "int8":
            calib, calib_source = parity.movie_windows(card, fs, args.calibrate, n=args.calibrate_windows, seed=1)
        _say(args, f"building TensorRT {args.precision} engine {engine_path} (batch 1..{args.max_batch}) ...")
        sidecar = build_engine(
            onnx_path, engine_path, precision=args.precision, max_batch=args.max_batch, calibration=calib,
            calibration_source=calib_source, workspace_gib=args.workspace, source=str(model),
        )
        made.append(engine_path)
        report["tensorrt"] = {k: sidecar[k] for k in ("gpu_name", "compute_capability", "tensorrt_version", "precision", "build_flags", "profile", "calibration")}
        report["tensorrt"]["path"] = str(engine_path)
        with TensorRTEngine(engine_path, reason="parity check") as trt_engine:
            results.append(
                parity.check(
                    ref_out, trt_engine, windows, target="tensorrt", path=engine_path,
                    limit=parity.limit_for("tensorrt", args.precision, args.tolerance), source=source,
                )
            )

    ok = all(r.ok for r in results)
    if args.json:
        print(parity.to_json(results, **report, reference=ref_name))
    else:
        print(f"exported {model} at {fs[0]}x{fs[1]}: {card.summary()}")
        print(f"  onnx: {onnx_path} (opset {info['opset']}, input {info['input']}, output {info['output']})")
        if "tensorrt" in report:
            t = report["tensorrt"]
            print(f"  tensorrt: {t['path']} ({t['precision']}, {t['gpu_name']} sm{t['compute_capability']}, TensorRT {t['tensorrt_version']})")
        if results:
            print(parity.format_table(results, ref_name))
    if not ok:
        bad = [r for r in results if not r.ok]
        for r in bad:
            p = Path(r.path)
            if p in made:  # never delete the user's own input file
                p.unlink(missing_ok=True)
                if r.target == "tensorrt":
                    p.with_name(p.name + ".json").unlink(missing_ok=True)
        names = ", ".join(f"{r.target} {r.precision} max_rel {r.max_rel:.3g} > {r.limit:.0e}" for r in bad)
        raise UserError(f"export failed the parity check ({names}); the failing file was removed")
    return 0
