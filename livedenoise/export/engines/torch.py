"""The PyTorch backend: `TorchEngine` runs a `.pt` checkpoint (or any torch module) on CPU or CUDA.

Any frame size works (no fixed input shape); it is the reference the exports
are checked against (`livedenoise.export.parity`).

On CUDA it can also run in fp16 (the network's weights halved; windows in and
frames out stay float32) and replay CUDA graphs (one captured per batch shape,
`cuda_graph=True`); both are refused on the CPU.
"""

from __future__ import annotations

import os

import numpy as np

from livedenoise.errors import UserError
from livedenoise.export.engines.base import Engine
from livedenoise.models.card import ModelCard

TORCH_PRECISIONS = ("fp32", "fp16")


class TorchEngine(Engine):
    backend = "torch"

    def __init__(self, card: ModelCard, net, device: str = "cpu", reason: str = "",
                 precision: str = "fp32", cuda_graph: bool = False):
        import torch

        if precision not in TORCH_PRECISIONS:
            raise UserError(f"torch engine: precision {precision!r} is not one of {', '.join(TORCH_PRECISIONS)}")
        self.device = torch.device(device)
        if self.device.type != "cuda" and (precision != "fp32" or cuda_graph):
            what = "fp16" if precision != "fp32" else "CUDA graphs"
            raise UserError(f"torch engine: {what} needs a CUDA device; this engine runs on {self.device}")
        self.card = card
        self.precision = precision
        self.cuda_graph = bool(cuda_graph)
        self._dtype = torch.float16 if precision == "fp16" else torch.float32
        net = net.to(self.device)
        self.net = (net.half() if precision == "fp16" else net).eval()
        self._torch = torch
        self._graphs: dict = {}
        self.reason = reason

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str = "cpu", reason: str = "",
                        precision: str = "fp32", cuda_graph: bool = False) -> "TorchEngine":
        from livedenoise.models.checkpoint import load_model

        card, net = load_model(path)
        return cls(card, net, device, reason, precision=precision, cuda_graph=cuda_graph)

    def _graphed(self, x):
        """Replay the CUDA graph captured for x's shape (captured on first sight, after 2 warm-up calls)."""
        torch = self._torch
        key = tuple(x.shape)
        if key not in self._graphs:
            static_in = x.clone()
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(2):
                    self.net(static_in)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph):
                    static_out = self.net(static_in)
            except RuntimeError as exc:  # an op that cannot be captured (a host sync, dynamic shapes)
                raise UserError(f"torch engine: CUDA graph capture failed for batch shape {key}: {exc}") from None
            self._graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = self._graphs[key]
        static_in.copy_(x)
        graph.replay()
        return static_out

    def run(self, windows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        torch = self._torch
        windows = self.check_windows(windows)
        with torch.no_grad() if self.cuda_graph else torch.inference_mode():
            x = torch.from_numpy(windows).to(self.device).to(self._dtype)
            y = self._graphed(x) if self.cuda_graph else self.net(x)
            y = y[:, 0].float().cpu().numpy()
        if out is None:
            return y
        self._out(out, y.shape)[...] = y
        return out

    def close(self) -> None:
        self._graphs.clear()
        super().close()

    def describe(self) -> str:
        graphs = " + CUDA graphs" if self.cuda_graph else ""
        return f"torch on {self.device} {self.precision}{graphs}: {self.card.summary()}{self._why()}"
