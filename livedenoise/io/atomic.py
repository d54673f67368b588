"""One rule for every output file: a partial name while writing, the final name only when complete.

Every writer (movies: `io/writers.py`; recordings: `io/writers_ephys.py`, the
Open Ephys `.npy` sidecars included) follows it through `Output`:

- While writing, data go to the **partial name**, `partial_path(final)`: the final
  name with `.partial` before its extension, so the partial is readable by the same
  tools up to its last flush: `out.tif` -> `out.partial.tif`,
  `run_g0_t0.imec0.ap.bin` -> `run_g0_t0.imec0.ap.partial.bin` (+ `.partial.meta`),
  an Open Ephys session folder `den` -> `den.partial`.
- **Complete** (the writer's `close()` after everything was written): the partial is
  renamed to the final name (`os.replace`, atomic on one filesystem). A file of that
  name is replaced only then; a folder of that name receives the new recording folder.
- **Interrupted** (an exception, Ctrl-C: the writer's `abort()`, or `with writer:`
  leaving on an exception): the final name is left as it was and what was written
  stays under the partial name (a partial with nothing in it is removed).
- **Crash** (SIGKILL, power loss): the partial name remains, readable up to the
  writer's last flush.

`Outputs` groups the outputs of one task (e.g. one `livedenoise denoise`): inside
`with Outputs() as outs:` a writer's `close()` finishes its files but the renames
wait for the block to complete, so an exception anywhere in the task (even after a
writer was closed by a `finally`) leaves every output under its partial name, listed
in `outs.kept` for the message to the user.
"""

from __future__ import annotations

import contextvars
import logging
import os
import shutil
from pathlib import Path
from typing import Callable, Sequence

from livedenoise.errors import UserError

log = logging.getLogger(__name__)

PARTIAL = ".partial"

_batch: contextvars.ContextVar["Outputs | None"] = contextvars.ContextVar("livedenoise_outputs", default=None)


def partial_path(final: str | os.PathLike, folder: bool = False) -> Path:
    """Where `final` is written until complete: `.partial` before the extension (`folder`: appended)."""
    final = Path(final)
    if folder or not final.suffix:
        return final.with_name(final.name + PARTIAL)
    return final.with_name(final.stem + PARTIAL + final.suffix)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Replace a small text file (a `.meta`, a `structure.oebin`) in one rename: never half written."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    os.replace(tmp, path)


class Output:
    """One output being written under its partial name: a file (with companions such as a `.meta`) or a folder.

    `owner` is the writer: `Outputs` calls its `abort()` when a task fails while it is still open.
    `progress()` says how much was written ("1200 samples"), for the messages.
    """

    def __init__(self, final: str | os.PathLike, *, folder: bool = False, companions: Sequence[str] = (),
                 owner=None, progress: Callable[[], str] | None = None):
        self.final = Path(final)
        self.folder = folder
        self.partial = partial_path(self.final, folder)
        self.companions = tuple(companions)
        self.owner = owner
        self.progress = progress or (lambda: "")
        self.state = "open"  # -> "finished" (complete, rename pending) -> "committed" | "kept" | "discarded"
        self._prepared = False  # only what prepare() made ours is ever removed
        batch = _batch.get()
        if batch is not None:
            batch.outputs.append(self)

    # ------------------------------------------------------------------ names

    def pairs(self) -> list[tuple[Path, Path]]:
        """(partial, final) of the main path and each companion (`.meta` beside a `.bin`)."""
        out = [(self.partial, self.final)]
        out += [(self.partial.with_suffix(s), self.final.with_suffix(s)) for s in self.companions]
        return out

    def describe(self) -> str:
        """Where the partial output is, and how much it holds."""
        notes = [f"+ {p.name}" for p, _ in self.pairs()[1:] if p.exists()]
        notes += [self.progress()] if self.progress() else []
        return f"{self.partial}" + (f" ({'; '.join(notes)})" if notes else "")

    def prepare(self) -> None:
        """Before writing: clear a stale partial file of an earlier interrupted run.

        A partial *folder* is never removed (it may hold a crashed recording's raw data):
        the next free name (`den.partial-2`, ...) is used instead.
        """
        if self.folder:
            k = 1
            while self.partial.exists():
                k += 1
                self.partial = self.final.with_name(f"{self.final.name}{PARTIAL}-{k}")
            self.partial.mkdir(parents=True)
            self._prepared = True
            return
        for p, _ in self.pairs():
            if p.is_dir():
                raise UserError(f"{p} is a folder; cannot write {self.final.name}")
        for p, _ in self.pairs():
            if p.exists():
                p.unlink()
        self._prepared = True

    # ------------------------------------------------------------------ ends

    def complete(self) -> None:
        """The writer has finished every file: rename now, or when the enclosing `Outputs` completes."""
        if self.state != "open":
            return
        self.state = "finished"
        if _batch.get() is None:
            self.commit()

    def commit(self) -> None:
        if self.state == "committed":
            return
        try:
            self._rename()
        except OSError as exc:
            self.state = "kept"
            raise UserError(
                f"cannot move the finished output to {self.final}: {exc.strerror or exc}; it is complete at {self.partial}"
            ) from None
        self.state = "committed"

    def _rename(self) -> None:
        if not self.folder:
            pairs = self.pairs()
            for _, final in pairs[1:]:  # an older .meta must never sit beside the new .bin
                if final.exists():
                    final.unlink()
            for partial, final in pairs:
                if partial.exists():
                    os.replace(partial, final)
            return
        _merge(self.partial, self.final)

    def interrupted(self, has_data: bool) -> None:
        """The task stopped before this output was complete: keep what was written, under the partial name."""
        if self.state in ("committed", "kept", "discarded"):
            return
        if has_data:
            self.state = "kept"
            log.info("incomplete output kept at %s", self.describe())
            return
        self.state = "discarded"
        if not self._prepared:
            return
        for p, _ in self.pairs():
            try:
                if self.folder and p.is_dir():
                    shutil.rmtree(p)
                elif p.is_file():
                    p.unlink()
            except OSError:
                pass


class Outputs:
    """All outputs of one task: renamed together when the block completes, kept as partial if it raises.

        outs = Outputs()
        try:
            with outs:
                denoise(...)          # writers created and closed inside
        except KeyboardInterrupt:
            print("kept:", [o.describe() for o in outs.kept])

    Blocks nest: an inner block defers to the outermost one.
    """

    def __init__(self):
        self.outputs: list[Output] = []
        self._token = None
        self._outer: Outputs | None = None

    @property
    def kept(self) -> list[Output]:
        """Outputs left under their partial name because the task did not complete."""
        return [o for o in self.outputs if o.state == "kept"]

    def __enter__(self) -> "Outputs":
        self._outer = _batch.get()
        if self._outer is None:
            self._token = _batch.set(self)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._outer is not None:
            self._outer.outputs.extend(self.outputs)
            return
        _batch.reset(self._token)
        if exc_type is None:
            for o in self.outputs:
                if o.state == "open" and o.owner is not None:
                    o.owner.close()  # a writer the task forgot to close: finish it now (commit below)
            for o in self.outputs:
                if o.state == "finished":
                    o.commit()
            return
        for o in self.outputs:
            if o.state == "open" and o.owner is not None:
                try:
                    o.owner.abort()
                except Exception as e:  # the task's own exception is the one to report
                    log.warning("closing %s after an error failed: %s", o.partial, e)
            if o.state in ("open", "finished"):
                o.interrupted(has_data=_has_data(o))


def _merge(src: Path, dst: Path) -> None:
    """Move folder `src` to `dst`; where `dst` exists, move each child of `src` into it (recursively).

    The usual case, `dst` absent, is one atomic rename. An existing `dst` (a folder made
    for the output, a session receiving a new `recordingN`) gets the new entries each in
    one rename; an entry present on both sides as a file is an error (OSError).
    """
    if not dst.exists():
        os.replace(src, dst)
        return
    if not (dst.is_dir() and src.is_dir()):
        raise FileExistsError(17, "exists", str(dst))
    for child in sorted(src.iterdir()):
        _merge(child, dst / child.name)
    src.rmdir()


def _has_data(o: Output) -> bool:
    owner = o.owner
    for attr in ("n_written", "written"):
        if owner is not None and hasattr(owner, attr):
            return int(getattr(owner, attr)) > 0
    return o.partial.exists()


__all__ = ["Output", "Outputs", "partial_path", "write_text_atomic", "PARTIAL"]
