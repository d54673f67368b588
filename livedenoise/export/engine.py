"""The Engine contract: one way to run a model, whatever backend runs it.

An engine maps a batch of normalised windows (B, C, *frame) float32 to the
normalised predictions (B, *frame) float32. Normalisation and window assembly
live with the callers (offline denoising, the live service), so every backend
computes exactly the same function.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from livedenoise.errors import UserError
from livedenoise.models.card import ModelCard


class Engine(ABC):
    card: ModelCard
    backend: str

    @abstractmethod
    def run(self, windows: np.ndarray) -> np.ndarray:
        """(B, C, *frame) float32 -> (B, *frame) float32."""

    def warmup(self, batch: int = 1) -> None:
        shape = self.card.frame_shape or [64, 64]
        self.run(np.zeros((batch, self.card.n_inputs, *shape), np.float32))

    @abstractmethod
    def describe(self) -> str:
        """One line for logs: backend, device, model."""


class TorchEngine(Engine):
    backend = "torch"

    def __init__(self, card: ModelCard, net, device: str = "cpu"):
        import torch

        self.card = card
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self._torch = torch

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str = "cpu") -> "TorchEngine":
        from livedenoise.models.checkpoint import load_model

        card, net = load_model(path)
        return cls(card, net, device)

    def run(self, windows: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32)).to(self.device)
            y = self.net(x)[:, 0]
            return y.cpu().numpy()

    def describe(self) -> str:
        return f"torch on {self.device}: {self.card.summary()}"


def open_engine(path: str | os.PathLike, backend: str = "auto") -> Engine:
    """Open a .pt checkpoint (other formats and backends: see the export issue)."""
    path = Path(path)
    if path.suffix == ".pt" and backend in ("auto", "torch"):
        return TorchEngine.from_checkpoint(path)
    raise UserError(f"cannot open {path} with backend {backend!r}")
