"""The imaging view: raw | denoised | residual | mean-subtracted, ROI traces, status bar.

Everything here runs on the Qt thread. Frames come from `FrameSource`s
(sources.py) whose threads count every frame and keep only the newest; a
QTimer copies the newest frame at screen rate, so a kHz stream is drawn at
screen rate while the status bar counts all of it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from livedenoise.gui.rois import RectRoi, write_traces_csv
from livedenoise.gui.sources import FrameSource
from livedenoise.gui.status import show_status, silent_source

pg.setConfigOptions(imageAxisOrder="row-major", antialias=False)

ROI_COLORS = [(255, 200, 0), (0, 200, 255), (255, 80, 200), (120, 255, 80), (255, 120, 40),
              (160, 120, 255), (0, 255, 200), (255, 255, 255)]
TRACE_PERIOD_S = 0.1
PANEL_TITLES = {"raw": "raw", "denoised": "denoised", "residual": "residual (raw - denoised)",
                "meansub": "mean-subtracted"}
NO_ROI_HINT = "no ROI: click Draw ROI and drag on an image, or pass --roi X,Y,W,H"


def _centred_note(vb: pg.ViewBox, text: str) -> pg.TextItem:
    """A grey note in the middle of a view (in screen pixels: it does not move with zoom or data)."""
    note = pg.TextItem(text, color=(170, 170, 170), anchor=(0.5, 0.5))
    note.setParentItem(vb)

    def centre(*_):
        note.setPos(vb.width() / 2, vb.height() / 2)

    vb.sigResized.connect(centre)
    centre()
    return note


class DrawViewBox(pg.ViewBox):
    """A ViewBox where a left-drag draws a rectangle (emitted in image pixels) while drawing is on."""

    rectDrawn = QtCore.Signal(object)

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.draw_mode = False

    def mouseDragEvent(self, ev, axis=None):
        if not self.draw_mode or ev.button() != QtCore.Qt.MouseButton.LeftButton:
            return super().mouseDragEvent(ev, axis)
        ev.accept()
        if ev.isFinish():
            self.rbScaleBox.hide()
            p0 = self.mapToView(ev.buttonDownPos())
            p1 = self.mapToView(ev.pos())
            self.rectDrawn.emit(QtCore.QRectF(p0, p1).normalized())
        else:
            self.updateScaleBox(ev.buttonDownPos(), ev.pos())


@dataclass
class _Panel:
    name: str
    vb: DrawViewBox
    item: pg.ImageItem
    label: pg.LabelItem
    widget: pg.GraphicsLayoutWidget


class ImagingWindow(QtWidgets.QMainWindow):
    def __init__(self, raw: FrameSource | None, denoised: FrameSource | None, *, refresh_hz: float = 60.0,
                 trace_window_s: float = 10.0, no_data_timeout: float = 5.0, title: str = "livedenoise view"):
        super().__init__()
        self.raw, self.den = raw, denoised
        self.sources = [s for s in (raw, denoised) if s is not None]
        self.no_data_timeout = no_data_timeout
        self.setWindowTitle(title)
        self.rendered = 0
        """Display updates that drew a new frame (conflation: far fewer than frames received)."""
        self.paused = False
        self.stream: tuple[int, int] | None = None
        self.levels: tuple[float, float] | None = None
        self.no_data: list[str] = []
        self._warned: set[str] = set()
        self.warn_stderr = True
        self._seen_seq = {"raw": -1, "denoised": -1}
        self._bufs: dict[str, np.ndarray | None] = {"raw": None, "denoised": None, "residual": None,
                                                    "meansub": None, "mean": None}
        self._shown: dict[str, object] = {"raw": None, "denoised": None}
        self._den_drawn_at = -1e9
        self._fit_key: tuple | None = None
        self._user_zoomed = False
        self._traces_drawn_at = -1e9
        self._rois: dict[int, list[pg.RectROI]] = {}
        self._roi_curves: dict[int, tuple[pg.PlotDataItem, pg.PlotDataItem]] = {}
        self._next_roi = 0
        self.meansub_warm = False
        """Whether the mean-subtracted panel shows its image (its running mean spans a time constant)."""
        self._build_ui(trace_window_s)
        (denoised or raw).mean.enabled = True
        self._status_tick = 0
        self.timer = QtCore.QTimer(self)
        self.timer.timeout.connect(self.tick)
        self.timer.start(max(1, int(1000 / refresh_hz)))

    # ------------------------------------------------------------------ UI
    def _build_ui(self, trace_window_s: float) -> None:
        central = QtWidgets.QWidget()
        outer = QtWidgets.QVBoxLayout(central)
        outer.setContentsMargins(4, 4, 4, 4)
        outer.addLayout(self._controls(trace_window_s))
        split = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        self.images = QtWidgets.QWidget()
        row = QtWidgets.QHBoxLayout(self.images)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(2)
        self.panels: dict[str, _Panel] = {}
        cmap_grey = pg.colormap.get("CET-L1")
        cmap_div = pg.colormap.get("CET-D1")
        first = None
        for name in ("raw", "denoised", "residual", "meansub"):
            widget = pg.GraphicsLayoutWidget()
            label = widget.addLabel(PANEL_TITLES[name], size="10pt", row=0, col=0)
            vb = DrawViewBox(lockAspect=True, invertY=True, enableMenu=False)
            widget.addItem(vb, row=1, col=0)
            item = pg.ImageItem(axisOrder="row-major")
            item.setColorMap(cmap_div if name in ("residual", "meansub") else cmap_grey)
            vb.addItem(item)
            if first is None:
                first = vb
            else:
                vb.setXLink(first)
                vb.setYLink(first)
            vb.rectDrawn.connect(self._on_rect_drawn)
            vb.sigRangeChangedManually.connect(self._on_manual_zoom)
            row.addWidget(widget)
            self.panels[name] = _Panel(name, vb, item, label, widget)
        self.meansub_note = _centred_note(self.panels["meansub"].vb, "")
        self.meansub_note.setVisible(False)
        self._relayout()
        split.addWidget(self.images)
        self.trace_plot = pg.PlotWidget()
        self.trace_plot.setLabel("bottom", "time", units="s")
        self.trace_plot.setLabel("left", "ROI mean")
        self.trace_plot.addLegend(offset=(5, 5))
        self.roi_hint = _centred_note(self.trace_plot.getPlotItem().getViewBox(), NO_ROI_HINT)
        split.addWidget(self.trace_plot)
        split.setSizes([620, 260])
        outer.addWidget(split, 1)
        self.setCentralWidget(central)
        self.status_label = QtWidgets.QLabel("waiting for data")
        self.status_label.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.statusBar().addWidget(self.status_label, 1)
        QtGui.QShortcut(QtGui.QKeySequence("Space"), self, activated=self.toggle_pause)
        QtGui.QShortcut(QtGui.QKeySequence.StandardKey.Save, self, activated=self._ask_png)
        self.resize(1500, 900)

    def _controls(self, trace_window_s: float) -> QtWidgets.QLayout:
        row = QtWidgets.QHBoxLayout()
        self.pause_btn = QtWidgets.QPushButton("Pause")
        self.pause_btn.setCheckable(True)
        self.pause_btn.toggled.connect(self.set_paused)
        row.addWidget(self.pause_btn)
        row.addWidget(QtWidgets.QLabel("channel"))
        self.channel_box = QtWidgets.QComboBox()
        row.addWidget(self.channel_box)
        row.addWidget(QtWidgets.QLabel("plane"))
        self.plane_box = QtWidgets.QComboBox()
        row.addWidget(self.plane_box)
        self.channel_box.currentIndexChanged.connect(self._on_stream_choice)
        self.plane_box.currentIndexChanged.connect(self._on_stream_choice)
        row.addSpacing(12)
        row.addWidget(QtWidgets.QLabel("contrast"))
        self.contrast_mode = QtWidgets.QComboBox()
        self.contrast_mode.addItems(["auto", "manual"])
        self.contrast_mode.setToolTip("auto: 0.5-99.5th percentiles of raw and denoised; manual: the two boxes")
        row.addWidget(self.contrast_mode)
        self.lo_box = QtWidgets.QDoubleSpinBox()
        self.hi_box = QtWidgets.QDoubleSpinBox()
        for b in (self.lo_box, self.hi_box):
            b.setRange(-1e9, 1e9)
            b.setDecimals(1)
            b.setKeyboardTracking(False)
            b.valueChanged.connect(self._on_manual_levels)
            row.addWidget(b)
        self.lock_box = QtWidgets.QCheckBox("lock")
        self.lock_box.setToolTip("keep the current contrast")
        row.addWidget(self.lock_box)
        row.addSpacing(12)
        self.show_residual = QtWidgets.QCheckBox("residual")
        self.show_meansub = QtWidgets.QCheckBox("mean-subtracted")
        for b in (self.show_residual, self.show_meansub):
            b.setChecked(True)
            b.toggled.connect(self._relayout)
            row.addWidget(b)
        row.addWidget(QtWidgets.QLabel("baseline"))
        self.tau_box = QtWidgets.QDoubleSpinBox()
        self.tau_box.setRange(0.1, 600)
        self.tau_box.setValue(5.0)
        self.tau_box.setSuffix(" s")
        self.tau_box.setToolTip("time constant of the running mean that the mean-subtracted view removes")
        row.addWidget(self.tau_box)
        row.addSpacing(12)
        self.draw_btn = QtWidgets.QPushButton("Draw ROI")
        self.draw_btn.setCheckable(True)
        self.draw_btn.setToolTip("drag on any image to add a rectangle ROI; right-click an ROI to remove it")
        self.draw_btn.toggled.connect(self._set_draw_mode)
        row.addWidget(self.draw_btn)
        fit = QtWidgets.QPushButton("Fit")
        fit.setToolTip("show the whole frame again after zooming (mouse wheel) or panning (drag)")
        fit.clicked.connect(lambda *_: self.fit_view())
        row.addWidget(fit)
        clear = QtWidgets.QPushButton("Clear ROIs")
        clear.clicked.connect(lambda *_: self.clear_rois())
        row.addWidget(clear)
        row.addWidget(QtWidgets.QLabel("window"))
        self.window_box = QtWidgets.QDoubleSpinBox()
        self.window_box.setRange(0.5, 3600)
        self.window_box.setValue(trace_window_s)
        self.window_box.setSuffix(" s")
        row.addWidget(self.window_box)
        row.addStretch(1)
        for w in (self.lo_box, self.hi_box, self.tau_box, self.window_box):
            w.setMaximumWidth(95)
        for w in (self.channel_box, self.plane_box, self.contrast_mode):
            w.setSizeAdjustPolicy(QtWidgets.QComboBox.SizeAdjustPolicy.AdjustToContents)
        png = QtWidgets.QPushButton("PNG…")
        png.clicked.connect(lambda *_: self._ask_png())
        csvb = QtWidgets.QPushButton("CSV…")
        csvb.clicked.connect(lambda *_: self._ask_csv())
        row.addWidget(png)
        row.addWidget(csvb)
        return row

    def _on_manual_zoom(self, *_):
        self._user_zoomed = True

    def visible_panels(self) -> list[str]:
        names = []
        if self.raw is not None:
            names.append("raw")
        if self.den is not None:
            names.append("denoised")
        if self.raw is not None and self.den is not None and self.show_residual.isChecked():
            names.append("residual")
        if self.show_meansub.isChecked():
            names.append("meansub")
        return names

    def _relayout(self, *_) -> None:
        visible = self.visible_panels()
        for name, p in self.panels.items():
            p.widget.setVisible(name in visible)

    # ------------------------------------------------------------ stream choice
    def _refresh_stream_boxes(self) -> None:
        streams = set()
        for s in self.sources:
            streams.update(s.newest.streams())
        if not streams:
            return
        chans = sorted({c for c, _ in streams})
        planes = sorted({p for _, p in streams})
        for box, values in ((self.channel_box, chans), (self.plane_box, planes)):
            have = [int(box.itemText(i)) for i in range(box.count())]
            if have != values:
                cur = box.currentText()
                box.blockSignals(True)
                box.clear()
                box.addItems([str(v) for v in values])
                if cur:
                    box.setCurrentText(cur)
                box.blockSignals(False)
        if self.stream is None:
            self._on_stream_choice()

    def _on_stream_choice(self, *_):
        if not self.channel_box.count() or not self.plane_box.count():
            return
        stream = (int(self.channel_box.currentText()), int(self.plane_box.currentText()))
        if stream != self.stream:
            self.stream = stream
            for s in self.sources:
                s.traces.set_stream(stream)
                s.mean.set_stream(stream)
            self._seen_seq = {"raw": -1, "denoised": -1}
            self._shown = {"raw": None, "denoised": None}

    def select_stream(self, channel: int, plane: int) -> None:
        self._refresh_stream_boxes()
        self.channel_box.setCurrentText(str(channel))
        self.plane_box.setCurrentText(str(plane))
        self._on_stream_choice()

    # ----------------------------------------------------------------- pause
    def toggle_pause(self) -> None:
        self.pause_btn.setChecked(not self.pause_btn.isChecked())

    def set_paused(self, paused: bool) -> None:
        """Freeze the display; the sources keep receiving, counting and tracing."""
        self.paused = bool(paused)
        self.pause_btn.setText("Resume" if paused else "Pause")
        for s in self.sources:  # file playback holds its position; live streams keep counting
            if hasattr(s, "set_paused"):
                s.set_paused(self.paused)
        if self.pause_btn.isChecked() != self.paused:
            self.pause_btn.setChecked(self.paused)

    # -------------------------------------------------------------- contrast
    def _on_manual_levels(self, *_):
        if self._updating_levels:
            return
        self.contrast_mode.setCurrentText("manual")
        lo, hi = self.lo_box.value(), self.hi_box.value()
        if hi > lo:
            self.levels = (lo, hi)
            self._apply_levels()

    _updating_levels = False

    def set_levels(self, lo: float, hi: float, lock: bool = True) -> None:
        self.contrast_mode.setCurrentText("manual")
        self.lock_box.setChecked(lock)
        self.levels = (float(lo), float(hi))
        self._show_levels()
        self._apply_levels()

    def _show_levels(self) -> None:
        self._updating_levels = True
        try:
            self.lo_box.setValue(self.levels[0])
            self.hi_box.setValue(self.levels[1])
        finally:
            self._updating_levels = False

    def _apply_levels(self) -> None:
        if self.levels is None:
            return
        for name in ("raw", "denoised"):
            if self.panels[name].item.image is not None:
                self.panels[name].item.setLevels(self.levels)

    def _auto_levels(self, frames: list[np.ndarray]) -> None:
        if self.lock_box.isChecked() or self.contrast_mode.currentText() == "manual":
            return
        lo, hi = contrast_levels(frames)
        if self.levels is None:
            self.levels = (float(lo), float(hi))
        else:  # smooth, so that the picture does not flicker
            a = 0.3
            self.levels = (self.levels[0] + a * (lo - self.levels[0]), self.levels[1] + a * (hi - self.levels[1]))
        self._show_levels()

    # ------------------------------------------------------------------- ROIs
    def _set_draw_mode(self, on: bool) -> None:
        for p in self.panels.values():
            p.vb.draw_mode = on

    def _on_rect_drawn(self, rect: QtCore.QRectF) -> None:
        x0, y0 = math.floor(rect.left()), math.floor(rect.top())
        x1, y1 = math.ceil(rect.right()), math.ceil(rect.bottom())
        if x1 - x0 >= 1 and y1 - y0 >= 1:
            self.add_roi(y0, y1, x0, x1)
        self.draw_btn.setChecked(False)

    def add_roi(self, y0: int, y1: int, x0: int, x1: int) -> int:
        """A rectangle ROI over rows y0:y1, columns x0:x1, drawn on every panel; returns its id."""
        roi_id = self._next_roi
        self._next_roi += 1
        color = ROI_COLORS[roi_id % len(ROI_COLORS)]
        items = []
        for p in self.panels.values():
            r = pg.RectROI((x0, y0), (x1 - x0, y1 - y0), pen=pg.mkPen(color, width=2), removable=True,
                           snapSize=1, translateSnap=True, scaleSnap=True)
            r.sigRegionChangeFinished.connect(lambda roi, rid=roi_id: self._roi_moved(rid, roi))
            r.sigRemoveRequested.connect(lambda roi, rid=roi_id: self.remove_roi(rid))
            p.vb.addItem(r)
            items.append(r)
        self._rois[roi_id] = items
        self.roi_hint.setVisible(False)
        pen_raw = pg.mkPen(color + (150,), width=1, style=QtCore.Qt.PenStyle.DashLine)
        self._roi_curves[roi_id] = (
            self.trace_plot.plot(pen=pen_raw, name=f"ROI {roi_id + 1} raw"),
            self.trace_plot.plot(pen=pg.mkPen(color, width=2), name=f"ROI {roi_id + 1} denoised"),
        )
        for s in self.sources:
            s.traces.set_roi(roi_id, RectRoi(y0, y1, x0, x1))
        return roi_id

    def _roi_moved(self, roi_id: int, moved: pg.RectROI) -> None:
        pos, size = moved.pos(), moved.size()
        x0, y0 = int(round(pos.x())), int(round(pos.y()))
        x1, y1 = x0 + max(1, int(round(size.x()))), y0 + max(1, int(round(size.y())))
        for r in self._rois.get(roi_id, []):
            if r is not moved:
                r.blockSignals(True)
                r.setPos((x0, y0), finish=False)
                r.setSize((x1 - x0, y1 - y0), finish=False)
                r.blockSignals(False)
        for s in self.sources:
            s.traces.set_roi(roi_id, RectRoi(y0, y1, x0, x1))

    def remove_roi(self, roi_id: int) -> None:
        for r in self._rois.pop(roi_id, []):
            r.getViewBox().removeItem(r) if r.getViewBox() else None
        for c in self._roi_curves.pop(roi_id, ()):
            self.trace_plot.removeItem(c)
        for s in self.sources:
            s.traces.remove_roi(roi_id)
        self.roi_hint.setVisible(not self._rois)

    def clear_rois(self) -> None:
        for rid in list(self._rois):
            self.remove_roi(rid)

    def roi_traces(self, roi_id: int) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """{"raw": (t, frame, mean), "denoised": ...} for one ROI, every frame received."""
        return {s.name: s.traces.snapshot(roi_id) for s in self.sources}

    # ----------------------------------------------------------------- export
    def export_png(self, path: str) -> None:
        self.render_now()
        self._update_traces()
        if not self.grab().save(str(path)):
            raise OSError(f"could not write {path}")

    def panel_image(self, name: str) -> np.ndarray:
        """The panel as drawn on screen, (H, W, 3) uint8 (tests and checks)."""
        return qimage_array(self.panels[name].widget.grab().toImage())

    def export_csv(self, path: str) -> int:
        return write_traces_csv(path, self.raw.traces if self.raw else None, self.den.traces if self.den else None)

    def _ask_png(self):
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Export view", "view.png", "PNG (*.png)")
        if path:
            self.export_png(path)

    def _ask_csv(self):
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Export ROI traces", "traces.csv", "CSV (*.csv)")
        if path:
            self.export_csv(path)

    # ----------------------------------------------------------------- render
    def tick(self) -> None:
        self._refresh_stream_boxes()
        if not self.paused:
            self.render_now()
        self._status_tick += 1
        if self._status_tick % 8 == 1:
            self.update_status()

    def render_now(self) -> bool:
        """Draw the newest frames if any arrived since the last draw; True if something new was drawn."""
        if self.stream is None:
            return False
        stream = self.stream
        new = False
        den = None
        if self.den is not None and self.den.newest.seq(stream) != self._seen_seq["denoised"]:
            den = self.den.newest.read(stream, self._bufs["denoised"])
        if den is not None:
            seq, hdr, self._bufs["denoised"] = den
            self._seen_seq["denoised"] = seq
            self._shown["denoised"] = hdr
            self._den_drawn_at = time.monotonic()
            new = True
        raw = None
        if self.raw is not None:
            hd, hr = self._shown["denoised"], self._shown["raw"]
            if hd is not None and (den is not None or hr is None or hr.frame != hd.frame):
                # the raw frame that matches the denoised one (it may arrive a moment later)
                raw = self.raw.newest.read(stream, self._bufs["raw"], frame=hd.frame)
            den_live = self.den is not None and time.monotonic() - self._den_drawn_at < 1.0
            if raw is None and (den is not None or not den_live) and \
                    self.raw.newest.seq(stream) != self._seen_seq["raw"]:
                raw = self.raw.newest.read(stream, self._bufs["raw"])
        if raw is not None:
            seq, hdr, self._bufs["raw"] = raw
            self._seen_seq["raw"] = seq
            self._shown["raw"] = hdr
            new = True
        if not new:
            return False
        shown = [self._bufs[k] for k in ("raw", "denoised") if self._bufs[k] is not None and self._shown[k]]
        self._auto_levels(shown)
        for name in ("raw", "denoised"):
            if (raw if name == "raw" else den) is not None:
                self.panels[name].item.setImage(self._bufs[name], autoLevels=False, levels=self.levels)
        self._render_residual()
        self._render_meansub()
        self._fit_if_needed(next(b.shape for b in shown))
        self.rendered += 1
        now = time.monotonic()
        if now - self._traces_drawn_at >= TRACE_PERIOD_S:  # traces hold every frame; 10 redraws/s suffice
            self._traces_drawn_at = now
            self._update_traces()
        return True

    def _render_residual(self) -> None:
        r, d = self._bufs["raw"], self._bufs["denoised"]
        hr, hd = self._shown["raw"], self._shown["denoised"]
        if r is None or d is None or r.shape != d.shape or hr is None or hd is None or hr.frame != hd.frame:
            return
        res = self._bufs["residual"]
        if res is None or res.shape != r.shape:
            res = self._bufs["residual"] = np.empty_like(r)
        np.subtract(r, d, out=res)
        self.panels["residual"].item.setImage(res, autoLevels=False, levels=_symmetric(res))

    def _render_meansub(self) -> None:
        key = "denoised" if self.den is not None else "raw"
        src = self.den if self.den is not None else self.raw
        f = self._bufs[key]
        if f is None:
            return
        tau = self.tau_box.value()
        src.mean.tau = tau
        panel = self.panels["meansub"]
        n, need = src.mean.warmup()
        if not need or n < need:  # a baseline of a few frames is mostly noise: its patches are not activity
            self.meansub_warm = False
            note = f"warming up: {n} of {need} frames" if need else f"warming up: {n} frame(s)"
            panel.label.setText(f"{key} - running mean ({tau:g} s): {note}")
            self.meansub_note.setText(f"{note}\n(the running mean needs {tau:g} s of frames)")
            self.meansub_note.setVisible(True)
            panel.item.setVisible(False)
            return
        mean = self._bufs["mean"] = src.mean.read(self._bufs["mean"])
        if mean is None or mean.shape != f.shape:
            return
        ms = self._bufs["meansub"]
        if ms is None or ms.shape != f.shape:
            ms = self._bufs["meansub"] = np.empty_like(f)
        np.subtract(f, mean, out=ms)
        if not self.meansub_warm:
            self.meansub_warm = True
            self.meansub_note.setVisible(False)
            panel.item.setVisible(True)
        panel.label.setText(f"{key} - running mean ({tau:g} s)")
        panel.item.setImage(ms, autoLevels=False, levels=_symmetric(ms))

    def _fit_if_needed(self, shape) -> None:
        """Show the whole frame on a new frame size or panel size, unless the user zoomed or panned."""
        vb = self.panels["raw" if self.raw is not None else "denoised"].vb
        key = (shape, tuple(self.visible_panels()), int(vb.width()), int(vb.height()))
        if key != self._fit_key and not self._user_zoomed:
            self._fit_key = key
            vb.autoRange(padding=0.01)

    def fit_view(self) -> None:
        self._user_zoomed = False
        self._fit_key = None
        if self._shape_shown() is not None:
            self._fit_if_needed(self._shape_shown())

    def _shape_shown(self):
        for k in ("raw", "denoised"):
            if self._bufs[k] is not None and self._shown[k] is not None:
                return self._bufs[k].shape
        return None

    def _update_traces(self) -> None:
        if not self._roi_curves:
            return
        t_end = t_start = None
        for roi_id, (c_raw, c_den) in self._roi_curves.items():
            for src, curve in ((self.raw, c_raw), (self.den, c_den)):
                if src is None:
                    continue
                t, _, v = src.traces.snapshot(roi_id)
                curve.setData(t, v)
                if len(t):
                    t_end = t[-1] if t_end is None else max(t_end, t[-1])
                    t_start = t[0] if t_start is None else min(t_start, t[0])
        if t_end is not None:
            start = max(t_end - self.window_box.value(), t_start if t_start is not None else -np.inf)
            self.trace_plot.setXRange(start, max(t_end, start + 1e-3), padding=0)

    # ----------------------------------------------------------------- status
    def status_fields(self) -> dict:
        """Numbers the status bar shows (service numbers from `stats` messages where present)."""
        rs = self.raw.status() if self.raw else None
        ds = self.den.status() if self.den else None
        st = ds.stats if ds else {}
        f: dict = {
            "raw_frames": rs.frames if rs else None,
            "denoised_frames": ds.frames if ds else None,
            "rendered": self.rendered,
            "paused": self.paused,
            "stats_messages": ds.stats_messages if ds else 0,
        }
        f["fps_in"] = _pick(st.get("fps_in"), rs.fps if rs else None)
        f["fps_out"] = _pick(st.get("fps_out"), ds.fps if ds else None)
        f["latency_p50_ms"] = _pick(_stat(st, "latency_ms_p50", "latency_p50_ms"), ds.latency_p50 if ds else None)
        f["latency_p99_ms"] = _pick(_stat(st, "latency_ms_p99", "latency_p99_ms"), ds.latency_p99 if ds else None)
        f["lag"] = ds.lag if ds and ds.lag is not None else st.get("lag")
        f["dropped"] = _pick(_stat(st, "dropped_upstream", "dropped"), rs.gaps if rs else None)
        f["skipped"] = _pick(st.get("skipped"), ds.gaps if ds else None)
        f["viewer_malformed"] = sum(s.malformed for s in (rs, ds) if s)
        f["malformed"] = _pick(st.get("malformed"), f["viewer_malformed"])
        f["model"] = (ds.model if ds else None) or st.get("model")
        f["backend"] = st.get("backend") or (ds.backend if ds else None)
        f["innovation"] = bool(st.get("innovation"))
        f["no_data"] = list(self.no_data)
        return f

    def update_status(self) -> str:
        self._check_no_data()
        f = self.status_fields()
        st_has_malformed = self.den is not None and self.den.status().stats.get("malformed") is not None

        def num(v, fmt="{:.1f}"):
            return "-" if v is None else fmt.format(v)

        parts = [
            f"in {num(f['fps_in'])} fps", f"out {num(f['fps_out'])} fps",
            f"latency p50 {num(f['latency_p50_ms'])} ms p99 {num(f['latency_p99_ms'])} ms",
            f"lag {num(f['lag'], '{}')}",
            f"dropped {num(f['dropped'], '{}')}", f"skipped {num(f['skipped'], '{}')}",
            f"malformed {f['malformed']}" + (f" (viewer {f['viewer_malformed']})"
                                              if st_has_malformed and f["viewer_malformed"] else ""),
            f"model {f['model'] or '-'}" + (" + innovation" if f["innovation"] else ""), f"backend {f['backend'] or '-'}",
            f"frames raw {num(f['raw_frames'], '{}')} / denoised {num(f['denoised_frames'], '{}')}"
            f" / drawn {f['rendered']}",
        ]
        return show_status(self.status_label, parts, self.paused, self.no_data)

    def _check_no_data(self) -> None:
        self.no_data = []
        for s in self.sources:
            st = s.status()
            if st.last_error and st.frames == 0 and st.finished:
                self.no_data.append(f"{s.name}: {st.last_error}")
            elif msg := silent_source(self, s, st.first_frame_s):
                self.no_data.append(msg)

    def closeEvent(self, ev):
        self.timer.stop()
        for s in self.sources:
            s.stop(0.5)
        # linked views signal each other while Qt deletes them: unlink first (a pyqtgraph crash)
        for panel in self.panels.values():
            panel.vb.setXLink(None)
            panel.vb.setYLink(None)
        super().closeEvent(ev)


def qimage_array(img: QtGui.QImage) -> np.ndarray:
    img = img.convertToFormat(QtGui.QImage.Format.Format_RGB888)
    w, h, bpl = img.width(), img.height(), img.bytesPerLine()
    return np.frombuffer(img.constBits(), np.uint8, count=h * bpl).reshape(h, bpl)[:, : 3 * w].reshape(h, w, 3).copy()


def _stat(stats: dict, *keys):
    """The first of `keys` present in a stats message (names as in COMMON.md first, older ones after)."""
    for k in keys:
        if stats.get(k) is not None:
            return stats[k]
    return None


def _pick(service, viewer):
    """The service's number when its stats message has one, else the viewer's own."""
    return viewer if service is None else service


def _finite_sample(frames: list[np.ndarray]) -> np.ndarray:
    """About 96 x 96 pixels of each frame, NaN/Inf left out (masked borders of motion-corrected movies)."""
    samples = [f[:: max(1, f.shape[0] // 96), :: max(1, f.shape[1] // 96)].ravel() for f in frames]
    s = np.concatenate(samples) if samples else np.zeros(0, np.float32)
    return s[np.isfinite(s)]


def contrast_levels(frames: list[np.ndarray]) -> tuple[float, float]:
    """Auto contrast: the 0.5-99.5th percentiles of the finite pixels of `frames` ((0, 1) when none)."""
    s = _finite_sample(frames)
    if not s.size:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(s, [0.5, 99.5]))
    return lo, (hi if hi > lo else lo + 1.0)


def _symmetric(a: np.ndarray) -> tuple[float, float]:
    s = _finite_sample([a])
    m = float(np.percentile(np.abs(s), 99.5)) if s.size else 1.0
    m = m or 1.0
    return (-m, m)
