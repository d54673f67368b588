"""Read a Keras HDF5 model file (`model.save("m.h5")`) with h5py: layers, their settings and weights.

No TensorFlow or Keras is imported. The layout is Keras' legacy HDF5 format
(keras/src/legacy/saving/legacy_h5_format.py, the same in tf.keras 2.x and
Keras 3):

- root attribute ``model_config``: JSON of the model (class names and
  settings of every layer, in the model's layer order); absent in files
  written by ``save_weights``;
- group ``model_weights`` (or the root itself for ``save_weights`` files) with
  attribute ``layer_names``, and per layer a group whose attribute
  ``weight_names`` lists the datasets of its weights in order
  (``conv2d/kernel:0`` in tf.keras 2, ``conv2d/kernel`` in Keras 3);
- ``keras_version`` and ``backend`` attributes.

Conv2D kernels are stored (kh, kw, in, out) for channels-last inputs.
Everything read is checked: a file that is not HDF5, lacks the groups, or
whose weights are not finite float arrays raises UserError naming the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from livedenoise.errors import UserError


@dataclass
class KerasLayer:
    name: str
    class_name: str | None
    """Keras class (`Conv2D`, `MaxPooling2D`, ...) from the model config; None without one."""
    config: dict[str, Any]
    weights: list[np.ndarray] = field(default_factory=list)
    """In `weight_names` order (Conv2D: kernel (kh, kw, in, out), bias (out,))."""
    inbound: Any = None
    """The config's ``inbound_nodes`` as stored (tf.keras 2 and Keras 3 spell them differently; see `inbound_names`)."""

    def inbound_names(self, known: set[str]) -> list[str]:
        """Names of the layers feeding this one, in order: tf.keras 2 lists ``[name, node, tensor, kwargs]``,
        Keras 3 nests ``{"config": {"keras_history": [name, node, tensor]}}``."""
        found: list[str] = []

        def walk(node) -> None:
            if isinstance(node, dict):
                cfg = node.get("config")
                hist = cfg.get("keras_history") if isinstance(cfg, dict) else None
                if isinstance(hist, list) and hist and isinstance(hist[0], str):
                    found.append(hist[0])
                    return
                for v in node.values():
                    walk(v)
            elif isinstance(node, list):
                if len(node) >= 3 and isinstance(node[0], str) and isinstance(node[1], int) and node[0] in known:
                    found.append(node[0])
                    return
                for v in node:
                    walk(v)

        walk(self.inbound or [])
        return found


@dataclass
class KerasModel:
    path: Path
    layers: list[KerasLayer]
    """Every layer in the model's layer order (the config's when there is one, else `layer_names`)."""
    keras_version: str
    backend: str
    has_config: bool
    input_shape: list[int | None] | None
    """The model input's shape without the batch axis (channels last), when the config gives it."""

    def with_weights(self) -> list[KerasLayer]:
        return [layer for layer in self.layers if layer.weights]


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _text(value.item())
    return str(value)


def _names(value) -> list[str]:
    return [_text(v) for v in np.atleast_1d(np.asarray(value))]


def _config_layers(config: dict) -> tuple[list[dict], list[int | None] | None]:
    cfg = config.get("config", {})
    if config.get("class_name") in ("Functional", "Model", "Sequential") or "layers" in cfg:
        layers = cfg.get("layers")
        if not isinstance(layers, list):
            raise ValueError("model config has no layer list")
        shape = None
        for lay in layers:
            if isinstance(lay, dict) and lay.get("class_name") == "InputLayer":
                c = lay.get("config", {})
                shape = c.get("batch_shape") or c.get("batch_input_shape")
                shape = list(shape[1:]) if isinstance(shape, list) and shape else None
                break
        return layers, shape
    raise ValueError(f"model class {config.get('class_name')!r} is not a Functional or Sequential model")


def read_keras_h5(path: str | Path) -> KerasModel:
    """Layers and weights of a Keras HDF5 model file. Raises UserError for anything else."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist")
    if not h5py.is_hdf5(path):
        raise UserError(f"{path} is not an HDF5 file (a Keras .h5 model is expected)")
    try:
        with h5py.File(path, "r") as f:
            root = f["model_weights"] if "model_weights" in f else f
            if "layer_names" not in root.attrs:
                raise UserError(f"{path} is an HDF5 file but not a Keras model (no layer_names)")
            keras_version = _text(f.attrs.get("keras_version", root.attrs.get("keras_version", "unknown")))
            backend = _text(f.attrs.get("backend", root.attrs.get("backend", "unknown")))
            config_layers: list[dict] | None = None
            input_shape = None
            if "model_config" in f.attrs:
                try:
                    config = json.loads(_text(f.attrs["model_config"]))
                    config_layers, input_shape = _config_layers(config)
                except (json.JSONDecodeError, ValueError, AttributeError, TypeError) as exc:
                    raise UserError(f"{path}: unreadable Keras model config ({exc})") from None
            weights: dict[str, list[np.ndarray]] = {}
            order = _names(root.attrs["layer_names"])
            for name in order:
                if name not in root:
                    raise UserError(f"{path}: layer {name!r} is listed but has no weights group")
                g = root[name]
                arrays = []
                for wname in _names(g.attrs.get("weight_names", [])):
                    if wname not in g:
                        raise UserError(f"{path}: weight {name}/{wname} is listed but missing")
                    ds = g[wname]
                    if not isinstance(ds, h5py.Dataset) or ds.dtype.kind != "f" or ds.size > 2**31:
                        raise UserError(f"{path}: weight {name}/{wname} is not a float array")
                    a = np.asarray(ds[()], dtype=np.float32)
                    if not np.isfinite(a).all():
                        raise UserError(f"{path}: weight {name}/{wname} has non-finite values")
                    arrays.append(a)
                weights[name] = arrays
    except OSError as exc:
        raise UserError(f"{path}: cannot read the HDF5 file ({exc})") from None
    if config_layers is None:
        layers = [KerasLayer(n, None, {}, weights[n]) for n in order]
    else:
        layers = []
        for lay in config_layers:
            if not isinstance(lay, dict):
                raise UserError(f"{path}: malformed layer entry in the model config")
            cfg = lay.get("config", {}) if isinstance(lay.get("config"), dict) else {}
            name = str(cfg.get("name", lay.get("name", "")))
            layers.append(KerasLayer(name, str(lay.get("class_name")), cfg, weights.pop(name, []), lay.get("inbound_nodes")))
        orphans = [n for n, w in weights.items() if w]
        if orphans:
            raise UserError(f"{path}: weights for layers not in the model config: {', '.join(orphans[:5])}")
    return KerasModel(path, layers, keras_version, backend, config_layers is not None, input_shape)
