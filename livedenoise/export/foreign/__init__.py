"""Models trained by other tools, brought into livedenoise (`livedenoise import`).

One module per tool: `deepinterpolation` (Keras .h5, read with h5py through
`keras_h5`) and `deepcad` (DeepCAD-RT PyTorch .pth). Each maps the weights onto
the architecture here that computes the same function (`interp2d` preset
`di`, `interp-ephys-di`, `cad3d`), and writes a model card whose `origin`
says where the weights came from. `import_model` picks the tool from the
file's content (HDF5 or a PyTorch file), never from its name alone.
"""

from __future__ import annotations

from pathlib import Path

from livedenoise.errors import UserError
from livedenoise.export.foreign.common import Imported, describe_file  # noqa: F401  (the package's public names)

TOOLS = ("deepinterpolation", "deepcad")
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def detect_tool(path) -> str:
    """`deepinterpolation` for an HDF5 file, `deepcad` for a PyTorch file; UserError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist")
    with open(path, "rb") as f:
        head = f.read(8)
    if head == HDF5_MAGIC:
        return "deepinterpolation"
    if head[:2] == b"PK":
        import zipfile

        try:
            with zipfile.ZipFile(path) as z:
                names = set(z.namelist())
        except (zipfile.BadZipFile, OSError):
            names = set()
        if "model.weights.h5" in names:
            raise UserError(f"{path} is a Keras 3 .keras archive; save the model as HDF5 (model.save('model.h5')) "
                            "and import that")
        return "deepcad"
    if head[:1] == b"\x80":  # torch.save: a zip archive (above), or a legacy pickle
        return "deepcad"
    raise UserError(f"{path}: neither a Keras .h5 (DeepInterpolation) nor a PyTorch .pth (DeepCAD-RT) file")


def import_model(path, tool: str | None = None, **options):
    """An `Imported` (card, state dict, notes) from another tool's model file.

    `tool`: one of TOOLS, or None to decide from the content. `options`: the
    tool's import options (pre, post, omission, norm_mean, norm_std; ephys
    n_channels; DeepCAD-RT para_path).
    """
    tool = tool or detect_tool(path)
    if tool == "deepinterpolation":
        from livedenoise.export.foreign.deepinterpolation import import_h5

        if options.pop("para_path", None) is not None:
            raise UserError("--deepcad-yaml applies to DeepCAD-RT models; this is a DeepInterpolation .h5")
        return import_h5(path, **options)
    if tool == "deepcad":
        from livedenoise.export.foreign.deepcad import import_pth

        if options.pop("n_channels", None) is not None:
            raise UserError("--channels applies to DeepInterpolation's Neuropixels models only")
        _refuse_livedenoise(path)
        return import_pth(path, **options)
    raise UserError(f"unknown tool {tool!r}; choose one of {', '.join(TOOLS)}")


def _refuse_livedenoise(path) -> None:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - read_state_dict reports unreadable files with their reason
        return
    if isinstance(obj, dict) and obj.get("format") == "livedenoise-checkpoint":
        raise UserError(f"{path} is already a livedenoise checkpoint: use it directly (train --init, denoise, export)")
