"""One-file checkpoints: weights + model card, loadable with weights_only=True."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch

from livedenoise.errors import UserError
from livedenoise.models.card import ModelCard
from livedenoise.models.registry import build_network

FORMAT_TAG = "livedenoise-checkpoint"


def save_checkpoint(path: str | os.PathLike, card: ModelCard, state_dict: dict) -> Path:
    """Write atomically, so a crash mid-save never leaves a half checkpoint."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    payload = {"format": FORMAT_TAG, "card": card.to_json(), "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()}}
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def read_checkpoint(path: str | os.PathLike) -> tuple[ModelCard, dict]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file {path} does not exist; train one with `livedenoise train` or check the path")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path} is not a readable livedenoise checkpoint (corrupt or truncated?): {first[:200]}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_TAG:
        raise UserError(f"{path} is a PyTorch file but not a livedenoise checkpoint (no model card)")
    card = ModelCard.from_json(payload.get("card"), source=str(path))
    return card, payload["state_dict"]


def load_model(path: str | os.PathLike) -> tuple[ModelCard, torch.nn.Module]:
    """Card and network (eval mode, CPU) from a checkpoint."""
    card, state = read_checkpoint(path)
    net = build_network(card)
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise UserError(f"{path}: weights do not match the {card.arch} architecture in its card: {str(exc).splitlines()[0]}") from None
    net.eval()
    return card, net
