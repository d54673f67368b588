"""What every importer returns (`Imported`) and how an imported file is described in a card's origin."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from livedenoise.errors import UserError
from livedenoise.models.card import ModelCard


@dataclass
class Imported:
    card: ModelCard
    state_dict: dict
    notes: list[str]
    """Lines for the user: what was assumed from the tool's conventions and how to change it."""


def describe_file(path) -> dict:
    """{"file": name, "bytes": size, "sha256": hex} of an imported file."""
    path = Path(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": h.hexdigest()}


def given_norm(card: ModelCard, norm_mean: float | None, norm_std: float | None) -> str | None:
    """Put --norm-mean/--norm-std on `card` when given (both or neither; std > 0); the note, or None if not given.

    Raises UserError for one without the other or a std that is not positive.
    """
    if (norm_mean is None) != (norm_std is None):
        raise UserError("give both --norm-mean and --norm-std")
    if norm_mean is None:
        return None
    if not norm_std > 0:
        raise UserError(f"--norm-std must be > 0 (got {norm_std})")
    card.norm_mean, card.norm_std = float(norm_mean), float(norm_std)
    return "card: the given --norm-mean/--norm-std"
