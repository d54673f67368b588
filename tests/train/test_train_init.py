"""`--init` from an imported model: a DeepInterpolation Neuropixels model (Keras .h5) fine-tuned on the user's
recording with a shorter window, then used by `denoise`; an init of another architecture is refused."""

import numpy as np
import pytest

from livedenoise.errors import UserError
from livedenoise.export.foreign import import_model
from livedenoise.io.readers_ephys import open_recording
from livedenoise.models.checkpoint import load_model, save_checkpoint
from livedenoise.stream.ephys import denoise_recording
from livedenoise.train.ephys import train_ephys
from tests.export.foreign.reference_nets import keras_model

C = 16


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    d = tmp_path_factory.mktemp("di_ephys")
    keras_model("unet_single_ephys_1024", (C, 2, 60), seed=7).save(str(d / "ephys.h5"))
    imp = import_model(d / "ephys.h5", norm_mean=0.0, norm_std=30.0)
    assert imp.card.params["n_channels"] == C  # read from the model's input rows
    save_checkpoint(d / "ephys.pt", imp.card, imp.state_dict)
    raw = (np.random.default_rng(0).standard_normal((600, C)) * 30).astype(np.int16)
    raw.tofile(d / "rec.dat")
    return d


def test_an_imported_neuropixels_model_fine_tunes_to_a_shorter_lag_and_denoises(imported, tmp_path):
    rec = open_recording(imported / "rec.dat", channels=C, sample_rate=30000)
    card, hist = train_ephys(rec, "interp-ephys-di", tmp_path / "tuned.pt", pre=30, post=2, omission=1, steps=2,
                             batch=2, log=lambda m: None, init=imported / "ephys.pt")
    assert np.isfinite(hist["loss"]).all()
    card2, _ = load_model(tmp_path / "tuned.pt")
    assert card2.lag == 3 and card2.origin["tool"] == "DeepInterpolation"
    assert "folded" in card2.training["init"] and card2.training["sample_rate"] == 30000.0
    rep = denoise_recording(imported / "rec.dat", tmp_path / "tuned.pt", tmp_path / "out.dat", channels=C,
                            sample_rate=30000, progress=False)
    assert rep["samples"] == 600
    out = open_recording(tmp_path / "out.dat", channels=C, sample_rate=30000)
    assert out.shape == (600, C)


def test_init_with_another_channel_count_is_refused(imported, tmp_path):
    raw = (np.random.default_rng(1).standard_normal((600, 8)) * 30).astype(np.int16)
    raw.tofile(tmp_path / "r8.dat")
    rec = open_recording(tmp_path / "r8.dat", channels=8, sample_rate=30000)
    with pytest.raises(UserError, match="16 channels"):
        train_ephys(rec, "interp-ephys-di", tmp_path / "x.pt", steps=1, log=lambda m: None, init=imported / "ephys.pt")
