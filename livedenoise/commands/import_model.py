"""`livedenoise import MODEL --out M.pt`: a DeepInterpolation (.h5) or DeepCAD-RT (.pth) model as a checkpoint.

The weights are mapped onto the architecture here that computes the same
function (export/foreign/), and the checkpoint's model card records where they
came from (`origin`). See docs/models.md ("Models from other tools").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from livedenoise.errors import UserError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "import",
        help="bring a DeepInterpolation (.h5) or DeepCAD-RT (.pth) model in as a livedenoise checkpoint",
        description=(
            "Read a model trained by DeepInterpolation (Keras .h5: the two-photon unet_single_1024 family or the "
            "Neuropixels unet_single_ephys_1024; read with h5py, no TensorFlow needed) or DeepCAD-RT (PyTorch .pth "
            "state dict, with its para.yaml when it lies next to it), map its weights onto the same network here "
            "(interp2d preset di, interp-ephys-di, cad3d) and write a checkpoint whose model card says where it came "
            "from. Then denoise/serve/export/`train --init` use it like any other checkpoint."
        ),
    )
    p.add_argument("model", metavar="MODEL", help="the other tool's model file (.h5 or .pth)")
    p.add_argument("--out", required=True, metavar="M.pt", help="checkpoint to write (.pt)")
    p.add_argument("--tool", choices=("deepinterpolation", "deepcad"), default=None,
                   help="which tool made MODEL (default: from the file's content: HDF5 -> DeepInterpolation, "
                        "PyTorch -> DeepCAD-RT)")
    w = p.add_argument_group("window (default: the tool's published one; see docs/models.md)")
    w.add_argument("--pre", type=int, default=None,
                   help="frames (ephys: samples) before the predicted one (DeepInterpolation: 30; DeepCAD-RT: cad3d's 8)")
    w.add_argument("--post", type=int, default=None, help="frames after it (DeepInterpolation: 30, i.e. 1 s of lag at 30 Hz)")
    w.add_argument("--omission", type=int, default=None,
                   help="frames hidden each side of the predicted one (DeepInterpolation: 0 two-photon, 1 Neuropixels)")
    n = p.add_argument_group("normalisation")
    n.add_argument("--norm-mean", type=float, default=None, help="mean the model's inputs were normalised with (raw units)")
    n.add_argument("--norm-std", type=float, default=None,
                   help="std the inputs were divided by (needed for Neuropixels models: DeepInterpolation used the "
                        "recording's first 200000 samples)")
    o = p.add_argument_group("tool-specific")
    o.add_argument("--channels", type=int, default=None,
                   help="DeepInterpolation Neuropixels: channel count (default: the model's input rows, else 384)")
    o.add_argument("--deepcad-yaml", default=None, metavar="PARA.yaml",
                   help="DeepCAD-RT settings file (default: para.yaml next to the .pth)")
    p.add_argument("--json", action="store_true", help="print the card and notes as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from livedenoise.commands.args import checkpoint_out
    from livedenoise.export.foreign import import_model
    from livedenoise.models.checkpoint import save_checkpoint

    out = checkpoint_out(args.out)
    model = Path(args.model)
    if model.exists() and out.resolve() == model.resolve():
        raise UserError(f"--out {out} is the model being imported; choose another output path")
    for flag in ("pre", "post", "omission", "channels"):
        v = getattr(args, flag)
        if v is not None and v < 0:
            raise UserError(f"--{flag} must be >= 0 (got {v})")
    options = dict(pre=args.pre, post=args.post, omission=args.omission, norm_mean=args.norm_mean,
                   norm_std=args.norm_std, n_channels=args.channels, para_path=args.deepcad_yaml)
    if args.deepcad_yaml and args.tool == "deepinterpolation":
        raise UserError("--deepcad-yaml applies to DeepCAD-RT models")
    imported = import_model(model, args.tool, **options)
    save_checkpoint(out, imported.card, imported.state_dict)
    card = imported.card
    if args.json:
        print(json.dumps({"out": str(out), "card": card.to_dict(), "notes": imported.notes}, indent=2, sort_keys=True))
        return 0
    origin = card.origin or {}
    print(f"imported {origin.get('tool')} {origin.get('network')} from {model} -> {out}")
    print(f"  {card.summary()}")
    for note in imported.notes:
        print(f"  note: {note}")
    return 0
