"""The PyTorch backend: `TorchEngine` runs a `.pt` checkpoint (or any torch module) on CPU or CUDA.

Any frame size works (no fixed input shape); it is the reference the exports
are checked against (`livedenoise.export.parity`).
"""

from __future__ import annotations

import os

import numpy as np

from livedenoise.export.engines.base import Engine
from livedenoise.models.card import ModelCard


class TorchEngine(Engine):
    backend = "torch"

    def __init__(self, card: ModelCard, net, device: str = "cpu", reason: str = ""):
        import torch

        self.card = card
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self._torch = torch
        self.reason = reason

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str = "cpu", reason: str = "") -> "TorchEngine":
        from livedenoise.models.checkpoint import load_model

        card, net = load_model(path)
        return cls(card, net, device, reason)

    def run(self, windows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        torch = self._torch
        windows = self.check_windows(windows)
        with torch.inference_mode():
            x = torch.from_numpy(windows).to(self.device)
            y = self.net(x)[:, 0]
            y = y.float().cpu().numpy()
        if out is None:
            return y
        self._out(out, y.shape)[...] = y
        return out

    def describe(self) -> str:
        return f"torch on {self.device} fp32: {self.card.summary()}{self._why()}"
