"""`denoise_movie`'s progress moves every batch, not every written chunk (issue 15, item 6)."""

import io

import numpy as np
import torch

from livedenoise.export.engines import open_engine
from livedenoise.io.readers import ArrayMovie
from livedenoise.io.writers import open_writer
from livedenoise.models.card import ModelCard
from livedenoise.models.checkpoint import save_checkpoint
from livedenoise.models.nets import interp2d
from livedenoise.progress import Progress
from livedenoise.stream.offline import denoise_movie


class Counts:
    def __init__(self):
        self.updates: list[int] = []

    def update(self, n: int) -> None:
        self.updates.append(n)


def test_progress_updates_every_batch_and_counts_every_frame(tmp_path):
    card = ModelCard("interp2d", interp2d.preset_params("lite"), "2p", 3, 1, 0,
                     list(interp2d.window(3, 1, 0).offsets), norm_mean=100.0, norm_std=20.0)
    torch.manual_seed(0)
    model = save_checkpoint(tmp_path / "m.pt", card, interp2d.build(card).state_dict())
    data = (100 + 20 * np.random.default_rng(0).standard_normal((300, 16, 16))).astype(np.int16)
    counts = Counts()
    with open_writer(tmp_path / "o.tif", len(data), data.shape[1:], data.dtype) as wr:
        denoise_movie(ArrayMovie(data, tmp_path / "in.npy"), open_engine(model, "torch"), wr, batch=4, chunk=128,
                      progress=counts)
    assert sum(counts.updates) == 300
    assert max(counts.updates) <= 4  # a batch at a time: 75 updates, where the writer flushes only 3 chunks
    assert len(counts.updates) >= 300 // 4


def test_progress_off_a_terminal_is_plain_lines():
    f = io.StringIO()
    bar = Progress(100, "frame", "denoise", every_s=0.0, file=f)
    for _ in range(10):
        bar.update(10)
    bar.close()
    lines = f.getvalue().splitlines()
    assert "\r" not in f.getvalue() and len(lines) >= 10
    assert lines[-1].startswith("denoise: 100/100 frames (100%)")
