"""The model card: everything needed to use a model, stored with it.

It travels inside every checkpoint (.pt), ONNX metadata and engine sidecar, so
a model file alone says how to feed it: window, frame shape, normalisation.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from livedenoise import __version__
from livedenoise.errors import UserError
from livedenoise.models.window import WindowSpec

FORMAT_VERSION = 1
MODALITIES = ("2p", "ephys", "fmri")


@dataclass
class ModelCard:
    arch: str
    """Registered architecture name (`interp2d`, `cad3d`, `classic`, ...)."""
    params: dict[str, Any]
    """Architecture hyper-parameters, enough to rebuild the network."""
    modality: str
    pre: int
    post: int
    omission: int
    offsets: list[int]
    """Input frame offsets relative to the predicted frame, in input-channel order."""
    layout: str = "frames"
    """How one input frame is laid out: `frames` (H x W image), `volumes` (I x J x K fMRI volume) or an ephys layout."""
    frame_shape: list[int] | None = None
    """[H, W] the model was built for, or None when any size works."""
    norm_mean: float = 0.0
    norm_std: float = 1.0
    training: dict[str, Any] = field(default_factory=dict)
    innovation: dict[str, float] | None = None
    """Innovation-step settings (sigma_xy, k) tuned on the training movie; None: untuned (`models/innovation.py`)."""
    origin: dict[str, Any] | None = None
    """Where the weights came from when they were made by another tool (`livedenoise import`): the tool, its
    network, the file and its sha256, how its window and normalisation map onto this card; kept when the model
    is fine-tuned (`train --init`). None for models trained by livedenoise from scratch."""
    format_version: int = FORMAT_VERSION
    package_version: str = __version__

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise UserError(f"model card: unknown modality {self.modality!r} (expected one of {', '.join(MODALITIES)})")
        if not self.norm_std > 0:
            raise UserError(f"model card: normalisation std must be > 0, got {self.norm_std}")
        try:
            self.window
        except ValueError as exc:
            raise UserError(f"model card: bad window: {exc}") from None
        if self.innovation is not None:
            from livedenoise.models.innovation import InnovationConfig

            self.innovation = InnovationConfig.from_dict(self.innovation).to_dict()

    @property
    def window(self) -> WindowSpec:
        """The window; blind-spot (`WindowSpec.blind`) when the architecture's params say `blind_spot`."""
        return WindowSpec(tuple(int(o) for o in self.offsets), int(self.omission),
                          blind=bool((self.params or {}).get("blind_spot", False)))

    @property
    def lag(self) -> int:
        return self.window.lag

    @property
    def n_inputs(self) -> int:
        return len(self.offsets)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "model") -> "ModelCard":
        if not isinstance(data, dict):
            raise UserError(f"{source}: no livedenoise model card found")
        version = data.get("format_version")
        if not isinstance(version, int):
            raise UserError(f"{source}: model card has no format_version; it was not written by livedenoise")
        if version > FORMAT_VERSION:
            raise UserError(
                f"{source}: model card format {version} is newer than this livedenoise "
                f"({__version__}, format {FORMAT_VERSION}); upgrade with `pip install -U livedenoise`"
            )
        known = set(cls.__dataclass_fields__)
        missing = [k for k in ("arch", "params", "modality", "pre", "post", "omission", "offsets") if k not in data]
        if missing:
            raise UserError(f"{source}: model card lacks {', '.join(missing)}")
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json(cls, text: str, source: str = "model") -> "ModelCard":
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, TypeError):
            raise UserError(f"{source}: model card is not valid JSON") from None
        return cls.from_dict(data, source)

    def summary(self) -> str:
        head = (f"{self.arch}({self.params.get('preset', '')}) {self.modality} pre={self.pre} post={self.post} "
                f"omission={self.omission} lag={self.lag}")
        if self.layout == "volumes":  # fmri: whole volumes of any size
            shape = "any size" if self.frame_shape is None else "x".join(map(str, self.frame_shape))
            return f"{head} volumes={shape}"
        if self.layout != "frames":  # ephys: windows of samples over any channel count
            return f"{head} (samples) layout={self.layout}"
        shape = "any size" if self.frame_shape is None else "x".join(map(str, self.frame_shape))
        return f"{head} frames={shape}"


RATE_TOLERANCE = 0.01
"""Relative difference between the data's sample rate and an ephys model's training rate that is refused."""


def rate_mismatch(card: ModelCard, rate: float) -> str | None:
    """Why an ephys model should not run on data at `rate` Hz, or None (same rate within RATE_TOLERANCE,
    or a card that does not record its training rate: `card.training["sample_rate"]`, Hz, written by `train`).

    The model's window counts samples, so at another rate it spans another time and the spikes
    it learnt have another width. The one rule for `denoise` and the live sidecar.
    """
    trained = (card.training or {}).get("sample_rate")
    try:
        trained = float(trained) if trained is not None else None
    except (TypeError, ValueError):
        trained = None
    if trained is None or not trained > 0 or not rate > 0 or abs(rate - trained) <= RATE_TOLERANCE * trained:
        return None
    return (f"the model was trained at {trained:g} Hz but the data are at {rate:g} Hz (its window counts samples: "
            f"here it spans {trained / rate:.3g}x the time it was trained on)")
