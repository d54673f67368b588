"""Checkpoint -> BioImage Model Zoo package (a .zip with rdf.yaml), for Fiji/deepImageJ, napari and Icy.

Format: the bioimage.io model description, format 0.5 (bioimageio.spec,
https://bioimage.io/docs/#/spec), built and packaged with `bioimageio.spec`
(the `bioimageio` extra), which also validates it before the file gets its
final name. Contents:

- weights in TorchScript (traced, the network's own signature) and ONNX
  (`export/onnx_export.py`, opset >= 17), both for one fixed frame size;
- input ``windows`` (batch, channel, y, x): the model's window, one channel
  per frame offset in the card's order (names ``t-30`` .. ``t+30``), in raw
  units; preprocessing ``fixed_zero_mean_unit_variance`` with the card's mean
  and std (models/norm.py: the same arithmetic within float rounding);
- output ``denoised`` (batch, channel=1, y, x): frame t, back in raw units by
  ``scale_linear`` (gain = std, offset = mean): the card's denormalisation;
- a test input and its output (.npy) made by the PyTorch model here, a
  2:1 cover image (raw frame | denoised), README.md (the model card, the
  window and lag, where the weights came from), and the card itself in
  ``config.livedenoise``.

Only frame models (two-photon/fMRI cards) are packaged: the model zoo's
consumers read images, not Neuropixels sample windows. The statistics used
are the card's (`--norm card`); a card whose statistics are placeholders
(an imported DeepInterpolation model before fine-tuning) takes them from the
``movie`` given (`--check MOVIE`), as `denoise --norm data` would.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from livedenoise import __version__
from livedenoise.errors import UserError
from livedenoise.io.atomic import partial_path
from livedenoise.models.card import ModelCard
from livedenoise.models.norm import denormalise, normalise

INPUT_ID = "windows"
OUTPUT_ID = "denoised"
CITATIONS = {
    "DeepInterpolation": ("Lecoq et al. Removing independent noise in systems neuroscience data using DeepInterpolation. "
                          "Nat Methods 18, 1401-1408 (2021)", "10.1038/s41592-021-01285-2"),
    "DeepCAD": ("Li et al. Reinforcing neuron extraction and spike inference in calcium imaging using deep self-supervised "
                "denoising. Nat Methods 18, 1395-1400 (2021)", "10.1038/s41592-021-01225-0"),
    "DeepCAD-RT": ("Li et al. Real-time denoising enables high-sensitivity fluorescence time-lapse imaging beyond the "
                   "shot-noise limit. Nat Biotechnol 41, 282-292 (2023)", "10.1038/s41587-022-01450-8"),
}
ARCH_METHOD = {"interp2d": ["DeepInterpolation"], "cad3d": ["DeepCAD", "DeepCAD-RT"]}


def require_bioimageio():
    try:
        import bioimageio.spec  # noqa: F401
    except ImportError:
        raise UserError("BioImage Model Zoo export needs bioimageio.spec: pip install 'livedenoise[bioimageio]'") from None


def needs_statistics(card: ModelCard) -> bool:
    """True when the card's normalisation is a placeholder (imported two-photon DeepInterpolation, not fine-tuned)."""
    return bool(card.origin) and "placeholder" in str(card.origin.get("normalisation", "")) and not card.training


def channel_names(card: ModelCard) -> list[str]:
    return [f"t{int(o):+d}" for o in card.offsets]


def _cover(path: Path, raw: np.ndarray, den: np.ndarray, raw_name: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    lo, hi = np.percentile(raw, [1, 99.5])
    fig, axes = plt.subplots(1, 2, figsize=(8, 4), dpi=100)
    for ax, img, title in zip(axes, (raw, den), (f"raw (input frame {raw_name})", "frame t denoised")):
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _readme(card: ModelCard, fs, mean: float, std: float, norm_from: str) -> str:
    o = card.origin or {}
    names = channel_names(card)
    lines = [
        f"# livedenoise {card.arch} ({card.params.get('preset', '')}) denoiser",
        "",
        f"Self-supervised denoiser for {card.modality} movies, exported by livedenoise {__version__}.",
        "",
        "## Input and output",
        "",
        f"- input `{INPUT_ID}`: (batch, {card.n_inputs}, {fs[0]}, {fs[1]}) float32, raw intensities. The "
        f"{card.n_inputs} channels are the frames around the frame t being denoised, in this order: "
        f"{', '.join(names[:4])}{' ... ' + ', '.join(names[-2:]) if len(names) > 4 else ''}. "
        f"The frame t itself{' and the ' + str(card.omission) + ' frames each side of it' if card.omission else ''} "
        "is never an input.",
        f"- output `{OUTPUT_ID}`: (batch, 1, {fs[0]}, {fs[1]}) float32: frame t denoised, raw units.",
        f"- lag: {card.lag} frame(s) (frame t can be denoised once frame t+{card.lag} exists).",
        f"- normalisation: (x - {mean:.6g}) / {std:.6g} before the network, the inverse after ({norm_from}).",
        "",
        "To denoise a movie, slide the window over it: for each frame t stack the frames at the offsets above.",
        "livedenoise does this (and the edges, live streaming, ONNX/TensorRT engines): `livedenoise denoise`.",
        "",
    ]
    if o:
        lines += ["## Where the weights came from", ""]
        lines += [f"- {k}: {v}" for k, v in o.items() if not isinstance(v, dict)]
        lines += [f"- {k}: {', '.join(f'{a}={b}' for a, b in v.items())}" for k, v in o.items() if isinstance(v, dict)]
        lines.append("")
    if card.training:
        lines += ["## Training", ""]
        lines += [f"- {k}: {v}" for k, v in sorted(card.training.items()) if not isinstance(v, (dict, list))]
        lines.append("")
    lines += ["## Model card", "", "```json", card.to_json(), "```", ""]
    return "\n".join(lines)


def export_bioimageio(checkpoint, out, frame_shape=None, movie=None, *, license: str | None = None,
                      authors: list[str] | None = None, name: str | None = None, opset: int = 17) -> dict:
    """Write `out` (.zip) and return a report: {"path", "frame_shape", "norm", "parity": {fmt: max_rel}, ...}.

    UserError: an ephys card, no frame size, an imported model without a --license, placeholder statistics
    without a movie, or a package that fails bioimageio.spec validation (nothing is left at `out` then).
    """
    require_bioimageio()
    import torch

    from bioimageio.spec import load_description, save_bioimageio_package
    from bioimageio.spec.model import v0_5 as bio

    from livedenoise.export import parity
    from livedenoise.export.engines.onnxruntime import OnnxRuntimeEngine
    from livedenoise.export.onnx_export import export_onnx, resolve_frame_shape
    from livedenoise.models.checkpoint import load_model

    checkpoint, out = Path(checkpoint), Path(out)
    if out.suffix.lower() != ".zip":
        raise UserError(f"--bioimageio {out}: a model zoo package is a .zip")
    card, net = load_model(checkpoint)
    if card.layout != "frames":
        raise UserError(f"{checkpoint} is a {card.modality} model ({card.layout} layout); the BioImage Model Zoo package "
                        "holds image (frame) models only")
    movie_shape = None
    if movie is not None:
        from livedenoise.io.readers import open_movie

        with open_movie(movie) as mv:
            movie_shape = mv.frame_shape
    fs = resolve_frame_shape(card, frame_shape, movie_shape)
    if license is None:
        if card.origin:
            raise UserError(f"{checkpoint} holds weights made by {card.origin.get('tool')}: give the license they may be "
                            "shared under with --license SPDX-ID (check the original project's terms)")
        license = "MIT"
    mean, std, norm_from = float(card.norm_mean), float(card.norm_std), "the model card's statistics"
    if needs_statistics(card):
        if movie is None:
            raise UserError(f"{checkpoint} has no normalisation statistics (imported; DeepInterpolation normalised each "
                            "movie by its own): give --check MOVIE to take them from a movie like the ones to denoise")
        from livedenoise.io.readers import open_movie
        from livedenoise.models.norm import sample_frames_norm

        with open_movie(movie) as mv:
            mean, std = sample_frames_norm(len(mv), lambda i: mv.read(i, i + 1))
        norm_from = f"estimated on {Path(movie).name}"
    card = dataclasses.replace(card, norm_mean=mean, norm_std=std, frame_shape=list(fs))
    windows, source = parity.movie_windows(card, fs, movie, n=1)
    raw_in = denormalise(windows, mean, std)  # raw units: what a model zoo user feeds
    normed = normalise(raw_in, mean, std)
    with torch.no_grad():
        pred = net(torch.from_numpy(normed)).numpy()
    raw_out = denormalise(pred, mean, std)

    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".bioimageio-", dir=out.parent))
    try:
        # weights: the checkpoint with the statistics used, then ONNX from it and TorchScript traced from the net
        from livedenoise.models.checkpoint import save_checkpoint

        ck = save_checkpoint(work / "model.pt", card, net.state_dict())
        onnx_path, _ = export_onnx(ck, work / "weights.onnx", frame_shape=fs, opset=opset)
        ck.unlink()
        ts_path = work / "weights.torchscript.pt"
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarning: shape arithmetic is fixed for the one frame size
            traced = torch.jit.trace(net, torch.from_numpy(normed), check_trace=False)
        traced.save(str(ts_path))
        # the formats must agree with the PyTorch model before anything is packaged
        ts_out = torch.jit.load(str(ts_path))(torch.from_numpy(normed)).detach().numpy()
        ort = OnnxRuntimeEngine(onnx_path, "CPUExecutionProvider", reason="bioimageio parity check")
        onnx_out = ort.run(normed)
        ref = pred.reshape(onnx_out.shape)
        checks = {"torchscript": parity.compare(pred, ts_out)[1], "onnx": parity.compare(ref, onnx_out)[1]}
        limit = parity.limit_for("onnx", "fp32")
        bad = {k: v for k, v in checks.items() if not v <= limit}
        if bad:
            raise UserError(f"the exported weights disagree with the PyTorch model: "
                            f"{', '.join(f'{k} max_rel {v:.3g}' for k, v in bad.items())} > {limit:.0e}")
        np.save(work / "test_input.npy", raw_in.astype(np.float32))
        np.save(work / "test_output.npy", raw_out.astype(np.float32))
        t_index = next(i for i, o in enumerate(card.offsets) if o > 0) if any(o > 0 for o in card.offsets) else len(card.offsets) - 1
        _cover(work / "cover.png", raw_in[0, t_index], raw_out[0, 0], channel_names(card)[t_index])
        (work / "README.md").write_text(_readme(card, fs, mean, std, norm_from), encoding="utf-8")

        o = card.origin or {}
        methods = ([o["tool"]] if o.get("tool") in CITATIONS else []) + [
            m for m in ARCH_METHOD.get(card.arch, []) if m != o.get("tool")]
        if o.get("tool") == "DeepCAD-RT":
            methods = ["DeepCAD-RT", "DeepCAD"]
        cite = [bio.CiteEntry(text=CITATIONS[m][0], doi=CITATIONS[m][1]) for m in dict.fromkeys(methods)] or [
            bio.CiteEntry(text=CITATIONS["DeepInterpolation"][0], doi=CITATIONS["DeepInterpolation"][1])]
        H, W = fs
        identity = mean == 0.0 and std == 1.0  # the spec refuses a no-op normalisation step
        descr = bio.ModelDescr(
            name=name or f"livedenoise {card.arch} {card.modality} denoiser (lag {card.lag})",
            description=(f"Self-supervised {card.modality} denoiser ({card.summary()})"
                         + (f", weights from {o.get('tool')} {o.get('network')}" if o else "")
                         + ". Input: the frames around frame t (one channel per offset); output: frame t denoised."),
            authors=[bio.Author(name=a) for a in (authors or [f"livedenoise {__version__} export"])],
            cite=cite,
            license=license,
            documentation=bio.FileDescr(source=work / "README.md"),
            covers=[bio.FileDescr(source=work / "cover.png")],
            tags=["denoising", "self-supervised", "two-photon", "calcium-imaging", "livedenoise", card.arch],
            inputs=[bio.InputTensorDescr(
                id=bio.TensorId(INPUT_ID),
                description=(f"the {card.n_inputs} frames at offsets {channel_names(card)[0]}..{channel_names(card)[-1]} "
                             "around frame t (see channel names), raw units"),
                axes=[bio.BatchAxis(), bio.ChannelAxis(channel_names=channel_names(card)),
                      bio.SpaceInputAxis(id=bio.AxisId("y"), size=H), bio.SpaceInputAxis(id=bio.AxisId("x"), size=W)],
                test_tensor=bio.FileDescr(source=work / "test_input.npy"),
                data=bio.IntervalOrRatioDataDescr(type="float32"),
                preprocessing=[] if identity else [bio.FixedZeroMeanUnitVarianceDescr(
                    kwargs=bio.FixedZeroMeanUnitVarianceKwargs(mean=mean, std=std))],
            )],
            outputs=[bio.OutputTensorDescr(
                id=bio.TensorId(OUTPUT_ID),
                description="frame t denoised, raw units",
                axes=[bio.BatchAxis(), bio.ChannelAxis(channel_names=["t"]),
                      bio.SpaceOutputAxis(id=bio.AxisId("y"), size=H), bio.SpaceOutputAxis(id=bio.AxisId("x"), size=W)],
                test_tensor=bio.FileDescr(source=work / "test_output.npy"),
                data=bio.IntervalOrRatioDataDescr(type="float32"),
                postprocessing=[] if identity else [bio.ScaleLinearDescr(kwargs=bio.ScaleLinearKwargs(gain=std, offset=mean))],
            )],
            weights=bio.WeightsDescr(
                torchscript=bio.TorchscriptWeightsDescr(source=ts_path, pytorch_version=torch.__version__.split("+")[0]),
                onnx=bio.OnnxWeightsDescr(source=onnx_path, opset_version=int(opset), parent="torchscript"),
            ),
            config={"livedenoise": {"card": card.to_dict(), "version": __version__, "source": checkpoint.name}},
        )
        part = partial_path(out)
        part.unlink(missing_ok=True)
        save_bioimageio_package(descr, output_path=part)
        loaded = load_description(part, perform_io_checks=True)
        summary = loaded.validation_summary
        if summary.status not in ("passed", "valid-format"):
            part.unlink(missing_ok=True)
            raise UserError(f"the package fails bioimageio.spec validation: {summary.format()[:500]}")
        os.replace(part, out)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - pydantic validation of the description, with its first line
        raise UserError("could not build the BioImage Model Zoo package: " + " / ".join(str(exc).splitlines()[:7])[:900]) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
        partial_path(out).unlink(missing_ok=True)
    return {"path": str(out), "frame_shape": list(fs), "norm": {"mean": mean, "std": std, "from": norm_from},
            "parity": checks, "limit": limit, "windows_source": source, "format_version": str(descr.format_version),
            "license": license, "card": card.to_dict()}
