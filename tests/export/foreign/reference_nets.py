"""The other tools' own networks, built from their published code, with random weights saved in their native format.

- DeepCAD-RT: ``deepcad.network.Network_3D_Unet`` from the `deepcad` 1.2.0
  package itself (installed by the dev extra). `deepcad.utils` imports
  `gdown` (a Google-Drive downloader for its demo data) which imports
  `pkg_resources`, gone from current setuptools; when that import fails a
  stand-in `gdown` module whose `download` refuses is registered first, so
  the network code loads and nothing can be downloaded.
- DeepInterpolation: its package pins TensorFlow 2.4 (no wheel for this
  Python), so its two network functions are transcribed below verbatim from
  deepinterpolation 0.1.4, network_collection.py (``unet_single_1024``,
  ``unet_single_ephys_1024``; same layers, arguments and order) and built
  with Keras 3 on the PyTorch backend (dev extra `keras`, no TensorFlow).
  ``model.save("x.h5")`` writes Keras' HDF5 format, which livedenoise reads
  with h5py.
"""

from __future__ import annotations

import os
import sys
import types

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "torch")


def deepcad_network(f_maps: int = 16):
    """DeepCAD-RT's Network_3D_Unet(in_channels=1, out_channels=1, f_maps, final_sigmoid=True), as its train/test use it."""
    try:
        import gdown  # noqa: F401
    except ImportError:
        stand_in = types.ModuleType("gdown")

        def download(*_a, **_k):
            raise RuntimeError("no downloads in tests")

        stand_in.download = download
        sys.modules["gdown"] = stand_in
    from deepcad.network import Network_3D_Unet

    return Network_3D_Unet(UNet_type="3DUNet", in_channels=1, out_channels=1, f_maps=f_maps, final_sigmoid=True)


def _keras():
    import keras

    if keras.backend.backend() != "torch":
        raise RuntimeError(f"Keras runs on {keras.backend.backend()}; the tests expect KERAS_BACKEND=torch")
    return keras


def unet_single_1024(path_json=None):
    """deepinterpolation 0.1.4 network_collection.unet_single_1024, verbatim but for the import source."""
    from keras.layers import Concatenate, Conv2D, MaxPooling2D, UpSampling2D

    def local_network_function(input_img):
        conv1 = Conv2D(64, (3, 3), activation="relu", padding="same")(input_img)
        pool1 = MaxPooling2D(pool_size=(2, 2))(conv1)
        conv2 = Conv2D(128, (3, 3), activation="relu", padding="same")(pool1)
        pool2 = MaxPooling2D(pool_size=(2, 2))(conv2)
        conv3 = Conv2D(256, (3, 3), activation="relu", padding="same")(pool2)
        pool3 = MaxPooling2D(pool_size=(2, 2))(conv3)
        conv4 = Conv2D(512, (3, 3), activation="relu", padding="same")(pool3)
        pool4 = MaxPooling2D(pool_size=(2, 2))(conv4)
        conv5 = Conv2D(1024, (3, 3), activation="relu", padding="same")(pool4)
        up1 = UpSampling2D((2, 2))(conv5)
        conc_up_1 = Concatenate()([up1, conv4])
        conv7 = Conv2D(512, (3, 3), activation="relu", padding="same")(conc_up_1)
        up2 = UpSampling2D((2, 2))(conv7)
        conc_up_2 = Concatenate()([up2, conv3])
        conv8 = Conv2D(256, (3, 3), activation="relu", padding="same")(conc_up_2)
        up3 = UpSampling2D((2, 2))(conv8)
        conc_up_3 = Concatenate()([up3, conv2])
        conv9 = Conv2D(128, (3, 3), activation="relu", padding="same")(conc_up_3)
        up4 = UpSampling2D((2, 2))(conv9)
        conc_up_4 = Concatenate()([up4, conv1])
        conv10 = Conv2D(64, (3, 3), activation="relu", padding="same")(conc_up_4)
        decoded = Conv2D(1, (1, 1), activation=None, padding="same")(conv10)
        return decoded

    return local_network_function


def unet_single_ephys_1024(path_json=None):
    """deepinterpolation 0.1.4 network_collection.unet_single_ephys_1024, verbatim but for the import source."""
    from keras.layers import Concatenate, Conv2D, MaxPooling2D, UpSampling2D

    def local_network_function(input_img):
        conv1 = Conv2D(64, (2, 2), activation="relu", padding="same")(input_img)
        pool1 = MaxPooling2D(pool_size=(2, 2))(conv1)
        conv2 = Conv2D(128, (3, 1), activation="relu", padding="same")(pool1)
        pool2 = MaxPooling2D(pool_size=(2, 1))(conv2)
        conv3 = Conv2D(256, (3, 1), activation="relu", padding="same")(pool2)
        pool3 = MaxPooling2D(pool_size=(2, 1))(conv3)
        conv4 = Conv2D(512, (3, 1), activation="relu", padding="same")(pool3)
        pool4 = MaxPooling2D(pool_size=(2, 1))(conv4)
        conv5 = Conv2D(1024, (3, 1), activation="relu", padding="same")(pool4)
        up1 = UpSampling2D((2, 1))(conv5)
        conc_up_1 = Concatenate()([up1, conv4])
        conv7 = Conv2D(512, (3, 1), activation="relu", padding="same")(conc_up_1)
        up2 = UpSampling2D((2, 1))(conv7)
        conc_up_2 = Concatenate()([up2, conv3])
        conv8 = Conv2D(256, (3, 1), activation="relu", padding="same")(conc_up_2)
        up3 = UpSampling2D((2, 1))(conv8)
        conc_up_3 = Concatenate()([up3, conv2])
        conv9 = Conv2D(128, (3, 1), activation="relu", padding="same")(conc_up_3)
        up4 = UpSampling2D((2, 2))(conv9)
        conc_up_4 = Concatenate()([up4, conv1])
        conv10 = Conv2D(64, (2, 2), activation="relu", padding="same")(conc_up_4)
        decoded = Conv2D(1, (1, 1), activation=None, padding="same")(conv10)
        return decoded

    return local_network_function


def keras_model(network: str, input_shape: tuple[int, int, int], seed: int = 0):
    """The DeepInterpolation network `network` as a Keras Model on (H, W, frames) inputs, with random kernels
    AND biases (Keras zero-initialises biases; random ones test that they are mapped too)."""
    keras = _keras()
    fn = {"unet_single_1024": unet_single_1024, "unet_single_ephys_1024": unet_single_ephys_1024}[network]
    inp = keras.layers.Input(shape=input_shape)
    model = keras.models.Model(inp, fn(None)(inp))
    rng = np.random.default_rng(seed)
    weights = []
    for w in model.get_weights():
        fan_in = int(np.prod(w.shape[:-1])) if w.ndim > 1 else 1
        scale = np.sqrt(2.0 / fan_in) if w.ndim > 1 else 0.1
        weights.append((rng.standard_normal(w.shape) * scale).astype(np.float32))
    model.set_weights(weights)
    return model


def keras_predict(model, x_channels_last: np.ndarray) -> np.ndarray:
    """The Keras model's output (B, H, W, 1) for (B, H, W, frames) inputs."""
    import torch

    with torch.no_grad():
        y = model(x_channels_last, training=False)
    return np.asarray(y.detach().cpu().numpy() if hasattr(y, "detach") else y, dtype=np.float32)


def save_deepcad_pth(path, seed: int = 0, f_maps: int = 16, para: dict | None = None):
    """A DeepCAD-RT network with random weights (biases too), saved as DeepCAD-RT does
    (`torch.save(model.state_dict(), ...)`), with its para.yaml next to it when `para` is given."""
    import torch
    import yaml

    torch.manual_seed(seed)
    net = deepcad_network(f_maps)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.randn_like(p) * 0.1)
    net.eval()
    torch.save(net.state_dict(), path)
    if para is not None:
        with open(os.path.join(os.path.dirname(str(path)), "para.yaml"), "w") as f:
            yaml.dump(para, f)
    return net
