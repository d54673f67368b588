"""DeepInterpolation .h5 -> livedenoise: the imported network gives the Keras network's output (1e-4 relative)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from livedenoise.errors import UserError
from livedenoise.export.foreign import import_model
from livedenoise.export.foreign.deepinterpolation import import_h5
from livedenoise.export.foreign.keras_h5 import read_keras_h5
from livedenoise.models.checkpoint import load_model, save_checkpoint
from livedenoise.models.registry import build_network
from tests.export.foreign.reference_nets import keras_model, keras_predict

TOL = 1e-4


@pytest.fixture(scope="module")
def di_2p(tmp_path_factory):
    """unet_single_1024 on frames of any size, 30 + 30 inputs, random weights, saved as Keras HDF5."""
    path = tmp_path_factory.mktemp("di") / "unet_single_1024.h5"
    model = keras_model("unet_single_1024", (None, None, 60), seed=3)
    model.save(str(path))
    return path, model


@pytest.fixture(scope="module")
def di_ephys(tmp_path_factory):
    path = tmp_path_factory.mktemp("di") / "unet_single_ephys_1024.h5"
    model = keras_model("unet_single_ephys_1024", (384, 2, 60), seed=4)
    model.save(str(path))
    return path, model


def _ours(card, state):
    net = build_network(card)
    net.load_state_dict(state)
    return net.eval()


def _run(net, x_last: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        y = net(torch.from_numpy(np.ascontiguousarray(x_last.transpose(0, 3, 1, 2))))
    return y.numpy().transpose(0, 2, 3, 1)


def _rel(a, b) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_two_photon_import_matches_the_keras_network(di_2p, tmp_path):
    path, model = di_2p
    imp = import_h5(path)
    card = imp.card
    assert card.arch == "interp2d" and card.params["preset"] == "di"
    assert (card.pre, card.post, card.omission, card.lag) == (30, 30, 0, 30)
    assert card.offsets == list(range(-30, 0)) + list(range(1, 31))  # DeepInterpolation's channel order
    assert card.origin["tool"] == "DeepInterpolation" and card.origin["network"] == "unet_single_1024"
    assert card.origin["config_checked"] is True and len(card.origin["sha256"]) == 64
    # through a checkpoint on disk, as every verb loads it
    save_checkpoint(tmp_path / "m.pt", card, imp.state_dict)
    _, net = load_model(tmp_path / "m.pt")
    x = np.random.default_rng(0).standard_normal((2, 64, 64, 60)).astype(np.float32)
    ref = keras_predict(model, x)
    assert ref.std() > 1e-3  # a live network, not a dead ReLU stack
    assert _rel(_run(net, x), ref) <= TOL
    # frames of another size (the U-Net pads to a multiple of 16): still the Keras output where both apply
    x2 = np.random.default_rng(1).standard_normal((1, 48, 80, 60)).astype(np.float32)
    assert _rel(_run(net, x2), keras_predict(model, x2)) <= TOL


def test_parity_fails_when_the_window_order_is_wrong(di_2p):
    """The check can fail: feeding the frames in reverse order (a wrong window mapping) breaks parity."""
    path, model = di_2p
    imp = import_h5(path)
    net = _ours(imp.card, imp.state_dict)
    x = np.random.default_rng(2).standard_normal((1, 64, 64, 60)).astype(np.float32)
    assert _rel(_run(net, x[..., ::-1].copy()), keras_predict(model, x)) > 1e-2


def test_neuropixels_import_matches_the_keras_network(di_ephys):
    path, model = di_ephys
    imp = import_model(path, norm_mean=3.0, norm_std=40.0)
    card = imp.card
    assert card.arch == "interp-ephys-di" and card.modality == "ephys" and card.layout == "checkerboard"
    assert (card.pre, card.post, card.omission) == (30, 30, 1)
    assert card.offsets == list(range(-31, -1)) + list(range(2, 32))
    assert card.params["n_channels"] == 384 and card.frame_shape == [384, 2]
    assert (card.norm_mean, card.norm_std) == (3.0, 40.0)
    net = _ours(card, imp.state_dict)
    x = np.random.default_rng(0).standard_normal((2, 384, 2, 60)).astype(np.float32)
    ref = keras_predict(model, x)
    assert ref.std() > 1e-3
    assert _rel(_run(net, x), ref) <= TOL


def test_neuropixels_import_needs_the_recording_statistics(di_ephys):
    with pytest.raises(UserError, match="--norm-mean and --norm-std"):
        import_model(di_ephys[0])


def test_the_window_split_is_checked_against_the_input_frames(di_2p):
    path, _ = di_2p
    imp = import_h5(path, pre=59, post=1)
    assert imp.card.offsets[-2:] == [-1, 1] and imp.card.lag == 1
    with pytest.raises(UserError, match="reads 60 input frames"):
        import_h5(path, pre=30, post=20)
    with pytest.raises(UserError, match="both --pre and --post"):
        import_h5(path, pre=30)


def _copy_with(src, dst, edit):
    import shutil

    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        edit(f)
    return dst


def test_a_changed_activation_in_the_config_is_refused(di_2p, tmp_path):
    import json

    def edit(f):
        cfg = json.loads(f.attrs["model_config"])
        for lay in cfg["config"]["layers"]:
            if lay["class_name"] == "Conv2D":
                lay["config"]["activation"] = "tanh"
                break
        f.attrs["model_config"] = json.dumps(cfg)

    bad = _copy_with(di_2p[0], tmp_path / "tanh.h5", edit)
    with pytest.raises(UserError, match="activation='tanh'"):
        import_h5(bad)


def test_swapped_concatenation_is_refused(di_2p, tmp_path):
    import json

    def edit(f):
        cfg = json.loads(f.attrs["model_config"])
        for lay in cfg["config"]["layers"]:
            if lay["class_name"] == "Concatenate":
                args = lay["inbound_nodes"][0]["args"][0]
                args.reverse()
                break
        f.attrs["model_config"] = json.dumps(cfg)

    bad = _copy_with(di_2p[0], tmp_path / "swap.h5", edit)
    with pytest.raises(UserError, match="joins"):
        import_h5(bad)


def test_non_finite_weights_are_refused(di_2p, tmp_path):
    def edit(f):
        root = f["model_weights"]
        name = [n for n in root.attrs["layer_names"] if root[n].attrs["weight_names"].size][0]
        wname = root[name].attrs["weight_names"][0]
        ds = root[name][wname]
        a = ds[()]
        a.flat[0] = np.nan
        ds[...] = a

    bad = _copy_with(di_2p[0], tmp_path / "nan.h5", edit)
    with pytest.raises(UserError, match="non-finite"):
        import_h5(bad)


def _as_tf_keras_2(src, dst):
    """Rewrite a Keras 3 .h5 in tf.keras 2.x's spelling (DeepInterpolation's published models were saved by
    TensorFlow 2.4): weights named `kernel:0`/`bias:0`, inbound nodes as [name, node, tensor, kwargs] lists,
    `batch_input_shape`, keras_version 2.4.0. Same weights, same graph."""
    import json
    import shutil

    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        root = f["model_weights"]
        for name in root.attrs["layer_names"]:
            g = root[name]
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in g.attrs["weight_names"]]
            for n in names:
                g.move(n, n + ":0")
            g.attrs["weight_names"] = np.array([(n + ":0").encode() for n in names], dtype="S")
        cfg = json.loads(f.attrs["model_config"])
        for lay in cfg["config"]["layers"]:
            hist = []

            def walk(node):
                if isinstance(node, dict):
                    h = node.get("config", {}).get("keras_history") if isinstance(node.get("config"), dict) else None
                    if h:
                        hist.append([h[0], h[1], h[2], {}])
                        return
                    for v in node.values():
                        walk(v)
                elif isinstance(node, list):
                    for v in node:
                        walk(v)

            walk(lay.get("inbound_nodes", []))
            lay["inbound_nodes"] = [hist] if hist else []
            if lay["class_name"] == "InputLayer":
                lay["config"]["batch_input_shape"] = lay["config"].pop("batch_shape")
        f.attrs["model_config"] = json.dumps(cfg).encode()
        f.attrs["keras_version"] = b"2.4.0"
        f.attrs["backend"] = b"tensorflow"


def test_a_model_saved_by_tf_keras_2_imports_with_the_same_output(di_2p, tmp_path):
    path, model = di_2p
    tf2 = tmp_path / "tf2.h5"
    _as_tf_keras_2(path, tf2)
    with h5py.File(tf2, "r") as f:  # the rewrite really is tf.keras 2's spelling
        conv = next(la.name for la in model.layers if type(la).__name__ == "Conv2D")  # "conv2d", or
        g = f["model_weights"][conv]  # "conv2d_N" when Keras built other models in this process first
        assert list(g.attrs["weight_names"]) == [f"{conv}/kernel:0".encode(), f"{conv}/bias:0".encode()]
    imp = import_h5(tf2)
    assert imp.card.origin["format"].startswith("Keras HDF5 (keras 2.4.0, backend tensorflow)")
    assert imp.card.origin["config_checked"] is True
    x = np.random.default_rng(3).standard_normal((1, 32, 32, 60)).astype(np.float32)
    assert _rel(_run(_ours(imp.card, imp.state_dict), x), keras_predict(model, x)) <= TOL

    def swap(f):  # and its [name, node, tensor, kwargs] inbound lists are read: a swapped join is refused
        import json

        cfg = json.loads(f.attrs["model_config"])
        lay = next(la for la in cfg["config"]["layers"] if la["class_name"] == "Concatenate")
        lay["inbound_nodes"][0].reverse()
        f.attrs["model_config"] = json.dumps(cfg).encode()

    with pytest.raises(UserError, match="joins"):
        import_h5(_copy_with(tf2, tmp_path / "tf2_swapped.h5", swap))


def test_tf_keras_2_weight_names_are_read(tmp_path):
    """tf.keras 2 names weights `conv2d/kernel:0` and stores them under that name; weights-only files have no config."""
    path = tmp_path / "tf2.h5"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.4.0"
        f.attrs["backend"] = b"tensorflow"
        f.attrs["layer_names"] = np.array([b"input_1", b"conv2d", b"max_pooling2d"])
        f.create_group("input_1").attrs["weight_names"] = np.array([], dtype="S1")
        g = f.create_group("conv2d")
        g.attrs["weight_names"] = np.array([b"conv2d/kernel:0", b"conv2d/bias:0"])
        g.create_dataset("conv2d/kernel:0", data=rng.standard_normal((3, 3, 4, 8)).astype(np.float32))
        g.create_dataset("conv2d/bias:0", data=np.arange(8, dtype=np.float32))
        f.create_group("max_pooling2d").attrs["weight_names"] = np.array([], dtype="S1")
    m = read_keras_h5(path)
    assert not m.has_config and m.keras_version == "2.4.0" and m.backend == "tensorflow"
    (conv,) = m.with_weights()
    assert conv.name == "conv2d" and conv.weights[0].shape == (3, 3, 4, 8) and conv.weights[1][3] == 3.0
    with pytest.raises(UserError, match="not a DeepInterpolation network"):
        import_h5(path)


def test_files_that_are_not_keras_models_are_refused(tmp_path):
    (tmp_path / "x.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(UserError, match="neither a Keras"):
        import_model(tmp_path / "x.h5")
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["data"] = np.zeros(3)
    with pytest.raises(UserError, match="not a Keras model"):
        import_model(tmp_path / "plain.h5")


def test_a_keras_3_archive_is_refused_with_what_to_do(tmp_path):
    import keras

    inp = keras.layers.Input((8, 8, 2))
    keras.models.Model(inp, keras.layers.Conv2D(1, (1, 1))(inp)).save(str(tmp_path / "m.keras"))
    with pytest.raises(UserError, match=r"\.keras archive; save the model as HDF5"):
        import_model(tmp_path / "m.keras")
