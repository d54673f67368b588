"""Start the viewer: display checks, sources, the window, and the --screenshot mode.

Qt is imported only here (and by the windows), after the display check, so that
`livedenoise view` without a display or without the gui extra fails with one
clear line instead of a Qt abort.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

from livedenoise.errors import UserError

NO_DISPLAY = ("no display available (DISPLAY / WAYLAND_DISPLAY not set): run headless with "
              "QT_QPA_PLATFORM=offscreen, or save a picture with --screenshot OUT.png --frames N")


def ensure_display(screenshot: bool) -> None:
    """Fail early and clearly without a display; a screenshot needs none (offscreen)."""
    if os.environ.get("QT_QPA_PLATFORM"):
        return
    if not sys.platform.startswith("linux"):
        return
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return
    if screenshot:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
        return
    raise UserError(NO_DISPLAY)


def import_qt():
    try:
        from PySide6 import QtWidgets  # noqa: F401
        import pyqtgraph  # noqa: F401
    except ImportError as exc:
        raise UserError(f"the viewer needs the gui extra ({exc.name} is missing): "
                        "pip install 'livedenoise[gui]'") from None


_QUIET = ("propagateSizeHints",)
"""Qt messages that say nothing to a user (the offscreen platform's)."""


def _qt_messages(mode, context, message):
    if not any(q in message for q in _QUIET):
        print(f"qt: {message}", file=sys.stderr)


def qt_app():
    from PySide6 import QtCore, QtWidgets

    app = QtWidgets.QApplication.instance()
    if app is None:
        QtCore.qInstallMessageHandler(_qt_messages)
        app = QtWidgets.QApplication(["livedenoise view"])
    return app


@dataclass
class ViewOptions:
    raw: str | None = None
    denoised: str | None = None
    file: str | None = None
    denoised_file: str | None = None
    fps: float = 30.0
    loop: bool = False
    ephys: bool = False
    screenshot: str | None = None
    frames: int = 30
    timeout: float = 5.0
    rois: tuple = ()
    levels: tuple | None = None
    channel: int | None = None
    plane: int | None = None
    dataset: str | None = None
    window_s: float = 10.0
    first_channel: int = 0
    n_channels: int = 32
    gain: float = 100.0
    positions: str | None = None
    size: tuple[int, int] = (1700, 950)


def build_imaging(opts: ViewOptions):
    """(window, sources) for the imaging view, sources started."""
    from livedenoise.gui.imaging import ImagingWindow
    from livedenoise.gui.sources import ZmqFrameSource, open_file_source

    limit = opts.frames if opts.screenshot else None
    if opts.file or opts.denoised_file:
        raw = den = None
        play = dict(fps=opts.fps, loop=opts.loop, frame_limit=limit, channel=opts.channel, plane=opts.plane)
        if opts.file:
            raw = open_file_source("raw", opts.file, dataset=opts.dataset, prefer="raw", endpoint=opts.file,
                                   history=32, **play)
        den_path = opts.denoised_file or _sibling_denoised(opts.file)
        if den_path:
            den = open_file_source("denoised", den_path, prefer="denoised", endpoint=den_path, **play)
            if raw is not None and not den.labelled:  # e.g. `denoise scan.tif --channel 2` wrote a plain TIFF
                den.channel, den.plane = raw.channel, raw.plane
    else:
        raw = ZmqFrameSource("raw", opts.raw, history=32) if opts.raw else None
        den = ZmqFrameSource("denoised", opts.denoised) if opts.denoised else None
    if raw is None and den is None:
        raise UserError("nothing to view: give --raw and/or --denoised endpoints, or --file")
    win = ImagingWindow(raw, den, trace_window_s=opts.window_s, no_data_timeout=opts.timeout)
    for roi in opts.rois:
        x, y, w, h = roi
        win.add_roi(y, y + h, x, x + w)
    if opts.levels:
        win.set_levels(*opts.levels, lock=True)
    for s in win.sources:
        s.start()
    return win


def _sibling_denoised(raw_path: str | None) -> str | None:
    """The denoised partner of a raw file: same HDF5 file with a `denoised` dataset, or the
    `serve --record` neighbour (raw_c1_p1_a001.h5 -> denoised_c1_p1_a001.h5)."""
    from pathlib import Path

    from livedenoise.gui.sources import has_denoised_partner

    if not raw_path:
        return None
    if has_denoised_partner(raw_path):
        return raw_path
    p = Path(raw_path)
    if p.name.startswith("raw_"):
        q = p.with_name("denoised_" + p.name[4:])
        if q.exists():
            return str(q)
    return None


def build_ephys(opts: ViewOptions):
    from livedenoise.gui.ephys import EphysWindow
    from livedenoise.gui.ephys_source import ZmqInterfaceSource, load_positions

    if opts.file or opts.denoised_file:
        raise UserError("--ephys plays ZMQ Interface streams only; --file is for imaging movies")
    raw = ZmqInterfaceSource("raw", opts.raw) if opts.raw else None
    den = ZmqInterfaceSource("denoised", opts.denoised) if opts.denoised else None
    if raw is None and den is None:
        raise UserError("nothing to view: give --raw and/or --denoised endpoints")
    pos = load_positions(opts.positions) if opts.positions else None
    win = EphysWindow(raw, den, positions=pos, no_data_timeout=opts.timeout, first_channel=opts.first_channel,
                      n_channels=opts.n_channels, uv_per_div=opts.gain,
                      window_s=opts.window_s)
    for s in win.sources:
        s.start()
    return win


def _progress(win, ephys: bool) -> tuple[int, bool]:
    """(count toward --frames, finished) of the source the screenshot waits for."""
    target = win.den or win.raw
    st = target.status()
    if ephys:
        return st.messages, False
    others_done = all(s.status().finished for s in win.sources)
    return st.frames, st.finished and others_done


def run(opts: ViewOptions) -> int:
    ensure_display(bool(opts.screenshot))
    import_qt()
    app = qt_app()
    win = build_ephys(opts) if opts.ephys else build_imaging(opts)
    win.resize(*opts.size)
    win.warn_stderr = not opts.screenshot  # a screenshot run ends with one error line instead
    outcome: dict = {}
    if opts.screenshot:
        from PySide6 import QtCore

        t0 = time.monotonic()
        state = {"last_count": 0, "last_change": t0, "done_at": None}

        def check():
            now = time.monotonic()
            count, finished = _progress(win, opts.ephys)
            if not opts.ephys and opts.channel is not None:
                win.select_stream(opts.channel, opts.plane or 1)
            if count != state["last_count"]:
                state["last_count"], state["last_change"] = count, now
            win.update_status()
            if win.no_data and not count:
                outcome["error"] = "; ".join(win.no_data)
                app.quit()
                return
            stalled = count and now - state["last_change"] > opts.timeout
            if count >= opts.frames or finished or stalled:
                if state["done_at"] is None:
                    state["done_at"] = now  # let the last frames reach the slots, then draw
                    return
                if now - state["done_at"] < 0.3:
                    return
                win.render_now()
                win.update_status()
                app.processEvents()
                win.export_png(opts.screenshot)
                outcome["saved"] = count
                if count < opts.frames and not finished:
                    outcome["warning"] = f"only {count} of {opts.frames} frames arrived before a {opts.timeout:g} s stall"
                app.quit()

        timer = QtCore.QTimer()
        timer.timeout.connect(check)
        timer.start(50)
        win.show()
        app.exec()
        timer.stop()
    else:
        if opts.channel is not None and not opts.ephys:
            from PySide6 import QtCore

            QtCore.QTimer.singleShot(500, lambda: win.select_stream(opts.channel, opts.plane or 1))
        win.show()
        app.exec()
    win.close()
    for s in win.sources:
        s.stop(1.0)
    if "error" in outcome:
        raise UserError(outcome["error"] + " (is the publisher running, and is the endpoint right?)")
    if opts.screenshot:
        if "saved" not in outcome:
            raise UserError("the viewer closed before the screenshot was taken")
        if "warning" in outcome:
            print(f"livedenoise view: warning: {outcome['warning']}", file=sys.stderr)
        print(f"livedenoise view: saved {opts.screenshot} after {outcome['saved']} "
              f"{'messages' if opts.ephys else 'frames'}")
    return 0
