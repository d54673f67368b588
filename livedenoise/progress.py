"""Progress of long work, on stderr: a bar on a terminal, plain lines elsewhere.

On a terminal a `tqdm` bar redraws in place. When stderr is a file or a pipe
(a log, CI, `2>&1 | tee`), carriage-return redraws would pile up into one
enormous line, so `Progress` prints a plain line every `every_s` seconds
instead (and one at the end):

    train interp2d: 150/2000 steps (8%), 12.3 steps/s, loss 0.1234
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class Progress:
    """Counts `update(n)` towards `total` (None: unknown) in `unit`s, labelled `desc`."""

    def __init__(self, total: int | None, unit: str, desc: str, *, every_s: float = 5.0,
                 file: TextIO | None = None, leave: bool = True):
        self.file = file if file is not None else sys.stderr
        self.total, self.unit, self.desc = total, unit, desc
        self.every_s = every_s
        self.n = 0
        self.post: dict[str, Any] = {}
        self.t0 = self.last = time.monotonic()
        self.bar = None
        isatty = getattr(self.file, "isatty", None)
        if isatty is not None and isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit=unit, desc=desc, dynamic_ncols=True, leave=leave, file=self.file)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            self._line()

    def set_postfix(self, post: dict[str, Any]) -> None:
        """Extra fields shown after the count (strings or numbers)."""
        self.post = dict(post)
        if self.bar is not None:
            self.bar.set_postfix(post, refresh=False)

    def write(self, line: str) -> None:
        """A message line that does not break the bar."""
        if self.bar is not None:
            self.bar.write(line, file=self.file)
        else:
            print(line, file=self.file, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.n:
            self._line()

    def _line(self) -> None:
        rate = self.n / max(time.monotonic() - self.t0, 1e-9)
        count = f"{self.n}/{self.total} {self.unit}s ({100 * self.n / self.total:.0f}%)" if self.total else \
            f"{self.n} {self.unit}s"
        extra = "".join(f", {k} {v}" for k, v in self.post.items())
        print(f"{self.desc}: {count}, {rate:.1f} {self.unit}s/s{extra}", file=self.file, flush=True)
