"""What every importer returns (`Imported`) and how an imported file is described in a card's origin."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

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
