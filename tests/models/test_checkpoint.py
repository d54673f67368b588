import pytest
import torch

from livedenoise.errors import UserError
from livedenoise.models.nets import interp2d
from livedenoise.models.card import FORMAT_VERSION, ModelCard
from livedenoise.models.checkpoint import load_model, save_checkpoint


def lite_card(pre=4, post=1):
    return ModelCard("interp2d", interp2d.preset_params("lite"), "2p", pre, post, 0,
                     list(interp2d.window(pre, post, 0).offsets), norm_mean=10.0, norm_std=2.0)


def test_checkpoint_round_trips_card_and_weights(tmp_path):
    card = lite_card()
    net = interp2d.build(card)
    path = save_checkpoint(tmp_path / "m.pt", card, net.state_dict())
    card2, net2 = load_model(path)
    assert card2 == card
    x = torch.randn(1, card.n_inputs, 32, 32)
    with torch.no_grad():
        assert torch.equal(net.eval()(x), net2(x))


def test_corrupt_checkpoint_gives_user_error(tmp_path):
    card = lite_card()
    path = save_checkpoint(tmp_path / "m.pt", card, interp2d.build(card).state_dict())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="not a readable livedenoise checkpoint"):
        load_model(path)


def test_foreign_torch_file_is_refused(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not a livedenoise checkpoint"):
        load_model(tmp_path / "other.pt")


def test_newer_card_format_is_refused():
    d = lite_card().to_dict()
    d["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(UserError, match="newer"):
        ModelCard.from_dict(d)


def test_missing_model_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_model(tmp_path / "nope.pt")
