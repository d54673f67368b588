"""The architecture registry: declared facts, discovery of `models/nets` modules, and no
architecture-name branches anywhere else in the package."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from livedenoise.errors import UserError
from livedenoise.models import registry
from livedenoise.models.card import ModelCard
from livedenoise.models.registry import Arch

PKG = Path(registry.__file__).resolve().parents[1]
NETS = PKG / "models" / "nets"


def _card(name: str) -> ModelCard:
    extra = {"n_channels": 12} if registry.modality(name) == "ephys" else {}
    if getattr(registry.arch_module(name), "GEOMETRY", False):  # site-ephys: the card holds the probe's sites
        from livedenoise.io.probe_geometry import np1_positions

        extra["positions"] = np1_positions(12)
    return registry.make_card(name, **extra)


def test_the_eight_architectures_are_registered():
    assert set(registry.names()) == {"interp2d", "cad3d", "classic", "interp-ephys", "block-ephys", "interp-ephys-di",
                                     "site-ephys", "fmri-blind"}
    assert registry.names(modality="2p") == ["interp2d", "cad3d", "classic"]
    assert set(registry.names(modality="ephys")) == {"interp-ephys", "block-ephys", "interp-ephys-di", "site-ephys"}
    assert registry.names(modality="fmri") == ["fmri-blind"]
    assert set(registry.names(trainable=True)) == {"interp2d", "cad3d", "interp-ephys", "block-ephys", "interp-ephys-di",
                                                   "site-ephys", "fmri-blind"}
    assert registry.names(trainable=False) == ["classic"]
    assert registry.names(trainer="imaging") == ["interp2d", "cad3d", "fmri-blind"]
    assert registry.default_name("2p") == "interp2d" and registry.default_name("ephys") == "site-ephys"
    assert registry.default_name("fmri") == "fmri-blind"
    assert dict(registry.ARCHS)["cad3d"] == "livedenoise.models.nets.cad3d"


@pytest.mark.parametrize("name", registry.names())
def test_every_architecture_declares_its_facts(name):
    decl = registry.info(name)
    mod = registry.arch_module(name)
    assert isinstance(decl, Arch) and decl.name == name and mod.ARCH is decl
    assert decl.modality in registry.MODALITIES and decl.trainer in registry.TRAINERS
    assert decl.presets and decl.defaults["preset"] in decl.presets and decl.layout in decl.layouts
    for key in ("pre", "post", "omission", "preset"):
        assert key in decl.defaults
    if decl.trainer in ("imaging", "ephys"):
        for key in ("loss", "crop", "batch", "lr"):
            assert key in decl.defaults, f"{name}: train needs a default {key}"
    for fn in ("preset_params", "window", "build"):
        assert callable(getattr(mod, fn)), f"{name} lacks {fn}()"
    # the facts read from source (no torch import) are the declared ones
    static = registry._declared()[name]
    assert (static["modality"], static["trainer"], static["default"], static["layout"]) == \
        (decl.modality, decl.trainer, decl.default, decl.layout)
    assert registry.modality(name) == decl.modality and registry.trainer(name) == decl.trainer
    assert registry.defaults(name) == {**decl.defaults, **decl.preset_defaults.get(decl.defaults["preset"], {})}
    for preset, extra in decl.preset_defaults.items():
        assert preset in decl.presets and set(extra) <= set(decl.defaults) - {"preset"}, (name, preset)
        assert registry.defaults(name, preset) == {**decl.defaults, **extra}

    card = _card(name)
    assert card.arch == name and card.layout == decl.layout
    assert (card.pre, card.post, card.omission) == tuple(registry.defaults(name)[k] for k in ("pre", "post", "omission")) \
        or name == "classic"
    assert registry.arch_for(card) is decl
    net = registry.build_network(card)
    assert isinstance(net, torch.nn.Module)
    need = registry.min_frames(card)
    assert need >= 2
    registry.check_length(card, need, "ok")
    with pytest.raises(UserError, match=f"needs at least {need}"):
        registry.check_length(card, need - 1, "short")
    x = registry.example_input(card, card.frame_shape or ((16, 16) if decl.modality == "2p" else (12, 200)))
    with torch.no_grad():
        y = net(x)
    assert y.shape[:2] == (1, 1)
    assert registry.describe_receptive_field(card)["arch"] == name


def test_names_do_not_import_torch():
    code = ("import sys; from livedenoise.models import registry; "
            "print(registry.names(), registry.modality('cad3d'), registry.default_name('ephys')); "
            "assert 'torch' not in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_training_pair_rules_come_from_the_modules():
    interp, cad = registry.make_card("interp2d"), registry.make_card("cad3d", pre=8, post=1, omission=1)
    assert registry.target_shift(interp) is None and registry.target_shift(cad) == 2
    assert registry.min_frames(interp) == 2
    offs = cad.window.offsets
    assert registry.min_frames(cad) == max(offs) - min(offs) + cad.omission + 2  # a whole sub-stack
    net = registry.build_network(cad)
    x = torch.zeros(2, cad.n_inputs, 16, 16)
    registry.training_outputs(cad, net, True)
    assert net(x).shape == (2, cad.n_inputs, 16, 16)  # one prediction per input, like the targets
    registry.training_outputs(cad, net, False)
    assert net(x).shape == (2, 1, 16, 16)
    registry.training_outputs(interp, registry.build_network(interp), True)  # no-op
    with pytest.raises(UserError, match="unknown architecture"):
        registry.info("nope")


TOY = textwrap.dedent('''
    """A toy architecture: one 3x3 convolution over the window's frames."""
    from torch import nn

    from livedenoise.models.registry import Arch
    from livedenoise.models.window import WindowSpec

    PRESETS = {"tiny": {"width": 1}}
    ARCH = Arch(name="toy-conv", modality="2p", trainer="imaging", presets=PRESETS,
                defaults={"pre": 2, "post": 1, "omission": 0, "preset": "tiny", "loss": "l2", "crop": 16,
                          "batch": 2, "lr": 1e-3})


    def preset_params(preset):
        return {"preset": preset, **PRESETS[preset]}


    def window(pre, post, omission):
        return WindowSpec.interp(pre, post, omission)


    def min_frames(card):
        return 5


    def build(card):
        return nn.Conv2d(card.n_inputs, 1, 3, padding=1)
''')


@pytest.fixture
def toy_arch(tmp_path, monkeypatch):
    """A new module in models/nets (on a temporary path of the package): nothing else edited."""
    import livedenoise.models.nets as nets

    folder = tmp_path / "nets"
    folder.mkdir()
    (folder / "toy_conv.py").write_text(TOY)
    monkeypatch.setattr(nets, "__path__", [*nets.__path__, str(folder)])
    registry._declared.cache_clear()
    yield "toy-conv"
    sys.modules.pop("livedenoise.models.nets.toy_conv", None)
    registry._declared.cache_clear()


def test_a_new_module_in_nets_is_a_new_architecture(toy_arch, tmp_path):
    from livedenoise.export.engines.torch import TorchEngine
    from livedenoise.models.checkpoint import load_model, save_checkpoint
    from livedenoise.train.imaging import TrainConfig, train, trainable

    assert toy_arch in registry.names(modality="2p", trainable=True) and toy_arch in trainable()
    assert registry.ARCHS[toy_arch] == "livedenoise.models.nets.toy_conv"
    movie = np.random.default_rng(0).poisson(10, (12, 16, 16)).astype(np.float32)
    card, state, hist = train([movie], TrainConfig(arch=toy_arch, steps=2, progress=False, val_fraction=0))
    assert card.arch == toy_arch and card.params == {"preset": "tiny", "width": 1} and len(hist["loss"]) == 2
    assert card.training["batch"] == 2 and card.training["loss"] == "l2"  # its declared defaults
    path = save_checkpoint(tmp_path / "toy.pt", card, state)
    card2, net = load_model(path)
    assert TorchEngine(card2, net).run(np.zeros((1, card2.n_inputs, 16, 16), np.float32)).shape == (1, 16, 16)
    with pytest.raises(UserError, match="needs at least 5"):
        train([movie[:4]], TrainConfig(arch=toy_arch, steps=1, progress=False))


def test_a_module_without_arch_is_not_an_architecture(tmp_path, monkeypatch):
    import livedenoise.models.nets as nets

    folder = tmp_path / "nets"
    folder.mkdir()
    (folder / "helpers_only.py").write_text("X = 1\n")
    before = set(registry.names())
    monkeypatch.setattr(nets, "__path__", [*nets.__path__, str(folder)])
    registry._declared.cache_clear()
    try:
        assert set(registry.names()) == before and "helpers_only" not in before
    finally:
        registry._declared.cache_clear()


# --------------------------------------------------------------------------- no arch-name branches


def _arch_strings(node: ast.AST) -> list[str]:
    """Registered names that a comparison operand spells out: "cad3d", ("a", "b"), {"a"}, ["a"]."""
    names = set(registry.names())
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value] if node.value in names else []
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [e.value for e in node.elts if isinstance(e, ast.Constant) and e.value in names]
    return []


def _outside_nets() -> list[Path]:
    skip = {NETS, PKG / "models" / "registry.py"}
    return [f for f in PKG.rglob("*.py") if not any(f == s or s in f.parents for s in skip)]


def test_no_architecture_name_branches_outside_the_nets_modules():
    """`arch == "cad3d"`, `arch in ("interp-ephys", "block-ephys")` and hard-coded tuples/lists of
    several architecture names belong in the architecture's module, asked through the registry."""
    names = set(registry.names())
    found = []
    for f in _outside_nets():
        tree = ast.parse(f.read_text(), str(f))
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                hits = [s for operand in (node.left, *node.comparators) for s in _arch_strings(operand)]
                if hits:
                    found.append(f"{f.relative_to(PKG.parent)}:{node.lineno} compares to {hits}")
            elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                spelled = {e.value for e in node.elts if isinstance(e, ast.Constant) and e.value in names}
                if len(spelled) >= 2:
                    found.append(f"{f.relative_to(PKG.parent)}:{node.lineno} lists {sorted(spelled)}")
            elif isinstance(node, ast.Match):
                found.append(f"{f.relative_to(PKG.parent)}:{node.lineno} match statement")  # match arch: case "cad3d"
    assert not found, "architecture-name branches outside models/nets:\n" + "\n".join(found)


def test_the_scan_catches_a_branch():
    src = 'if card.arch == "cad3d":\n    pass\nARCHS = ("interp2d", "cad3d")\nok = x in ("a",)\n'
    tree = ast.parse(src)
    compares = [n for n in ast.walk(tree) if isinstance(n, ast.Compare)]
    assert _arch_strings(compares[0].comparators[0]) == ["cad3d"] and not _arch_strings(compares[1].comparators[0])
    assert len(_arch_strings(next(n for n in ast.walk(tree) if isinstance(n, ast.Tuple)))) == 2
