"""Engines: one way to run a model whatever backend runs it (PyTorch, ONNX Runtime, TensorRT).

`open_engine(model, backend)` is the one entry point; every backend module
implements the `Engine` contract of `base`.
"""

from livedenoise.export.engines.base import open_engine

__all__ = ["open_engine"]
