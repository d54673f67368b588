"""Checkpoint -> ONNX: fixed frame size, dynamic batch axis, model card embedded.

The exported graph has one input ``windows`` (batch, *window) float32 and one
output ``frames`` (batch, 1, *frame) float32 -- the network's own signature;
engines drop the singleton channel. Only the batch axis is dynamic (TensorRT
plans its kernels for the fixed frame size), unless the architecture module
defines ``dynamic_axes()`` (the ephys block model keeps channels and samples
dynamic; such exports run on onnxruntime, TensorRT needs fixed sizes). The
example input is the module's ``example_input(card, frame_shape)`` when it has
one, else zeros (1, n_inputs, H, W).

Frame-size rule: ``--frame-shape H W`` when given, else the card's
``frame_shape``, else (from the export command) the frame size of the
``--check`` / ``--calibrate`` movie; with none of these the export stops and
asks for ``--frame-shape``. The size exported is written into the embedded
card's ``frame_shape``, so every engine built from the file knows it.

Metadata (``metadata_props``): ``livedenoise.card`` (the card JSON),
``livedenoise.version``, ``livedenoise.source_sha256`` (the checkpoint's hash).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import warnings
from pathlib import Path

from livedenoise import __version__
from livedenoise.errors import UserError
from livedenoise.export.engines.base import CARD_KEY, example_input
from livedenoise.models.card import ModelCard

MIN_OPSET = 17
INPUT_NAME = "windows"
OUTPUT_NAME = "frames"


def resolve_frame_shape(card: ModelCard, frame_shape=None, fallback=None, fallback_name: str = "movie") -> tuple[int, int]:
    """Frame size to export at: explicit > card > fallback (a movie's frame size) > error.

    Two numbers H W, or three I J K for a model of volumes (card layout `volumes`, fMRI)."""
    volumes = getattr(card, "layout", "frames") == "volumes"
    for fs in (frame_shape, card.frame_shape, fallback):
        if fs is not None:
            fs = tuple(int(s) for s in fs)
            if len(fs) != (3 if volumes else 2) or min(fs) < 1:
                what = "three positive numbers I J K (a volume; --check RUN.nii.gz takes them from a run)" \
                    if volumes else "two positive numbers H W"
                raise UserError(f"frame shape must be {what}, got {fs}")
            return fs  # type: ignore[return-value]
    raise UserError(
        f"the model card has no frame size ({card.arch} works at any size); pass --frame-shape H W "
        "(the size of the frames you will denoise) or --check MOVIE to take it from a movie"
    )


def dynamic_axes(card: ModelCard) -> dict:
    """Batch only, unless the architecture declares more (``registry.dynamic_axes``: one input, one output)."""
    from livedenoise.models import registry

    given = registry.dynamic_axes(card)
    if given is None:
        return {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    given = list(given.values())
    if len(given) != 2:
        raise ValueError(f"{card.arch}.dynamic_axes() must describe one input and one output")
    return {INPUT_NAME: dict(given[0]), OUTPUT_NAME: dict(given[1])}


def export_onnx(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    frame_shape=None,
    opset: int = MIN_OPSET,
) -> tuple[Path, ModelCard]:
    """Export `checkpoint` to `out` (atomically) and return (path, card as embedded)."""
    import onnx
    import torch

    from livedenoise.models.checkpoint import load_model

    if opset < MIN_OPSET:
        raise UserError(f"--opset must be >= {MIN_OPSET} (got {opset})")
    checkpoint, out = Path(checkpoint), Path(out)
    card, net = load_model(checkpoint)
    fs = resolve_frame_shape(card, frame_shape)
    card = dataclasses.replace(card, frame_shape=list(fs))
    x = example_input(card, fs)
    axes = dynamic_axes(card)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarning on shape arithmetic, legacy-exporter deprecation
        torch.onnx.export(
            net,
            (x,),
            buf,
            dynamo=False,  # TorchScript exporter: no onnxscript dependency, TensorRT-friendly graphs
            opset_version=int(opset),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes=axes,
            do_constant_folding=True,
        )
    with torch.no_grad():
        out_shape = tuple(net(x).shape)
    model = onnx.load_from_string(buf.getvalue())
    # the crop back to the frame size is traced through Shape ops, which leaves the
    # output's spatial dims symbolic; they are fixed by the frame size: say so.
    dims = model.graph.output[0].type.tensor_type.shape.dim
    if len(dims) == len(out_shape):
        for i, (d, v) in enumerate(zip(dims, out_shape)):
            if i not in axes[OUTPUT_NAME]:
                d.ClearField("dim_param")
                d.dim_value = int(v)
    meta = {
        CARD_KEY: card.to_json(),
        "livedenoise.version": __version__,
        "livedenoise.source_sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
    }
    del model.metadata_props[:]
    for k, v in meta.items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    model.producer_name = "livedenoise"
    model.producer_version = __version__
    model.doc_string = f"livedenoise {card.summary()}"
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise UserError(f"the ONNX export of {checkpoint} does not pass onnx.checker: {str(exc).splitlines()[0][:200]}") from None
    got = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if got < MIN_OPSET:
        raise UserError(f"exported opset {got} is below {MIN_OPSET}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, out)
    return out, card


def onnx_info(path: str | os.PathLike) -> dict:
    """Opset, input/output shapes and metadata of an exported file (for reports)."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)

    def dims(v):
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    return {
        "opset": max((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), default=0),
        "input": dims(m.graph.input[0]),
        "output": dims(m.graph.output[0]),
        "metadata": {p.key: p.value for p in m.metadata_props},
    }
