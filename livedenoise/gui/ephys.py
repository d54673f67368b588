"""The ephys view: stacked traces (raw and denoised, overlaid or side by side) and a heat map.

Input: Open Ephys ZMQ Interface streams (ephys_source.py) filled by receiver
threads; a QTimer reads the window being drawn at screen rate. Traces are
min/max-decimated to about two points per screen pixel so that spikes survive.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from livedenoise.gui.ephys_source import (
    ZmqInterfaceSource,
    depth_order,
    neuropixels_positions,
)
from livedenoise.gui.status import show_status, silent_source

pg.setConfigOptions(imageAxisOrder="row-major", antialias=False)

MAX_POINTS = 1200
"""Decimated points per trace (min/max pairs)."""
HEAT_COLUMNS = 600


def minmax_decimate(x: np.ndarray, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """(channels, n) -> (channels, ~n_out) keeping each bin's min and max; returns (idx, y)."""
    n = x.shape[1]
    k = max(1, n // max(1, n_out // 2))
    if k == 1:
        return np.arange(n, dtype=np.float64), x
    m = n // k
    b = x[:, : m * k].reshape(x.shape[0], m, k)
    y = np.empty((x.shape[0], 2 * m), np.float32)
    y[:, 0::2] = b.min(axis=2)
    y[:, 1::2] = b.max(axis=2)
    idx = np.repeat(np.arange(m) * k + k / 2.0, 2)
    return idx, y


class EphysWindow(QtWidgets.QMainWindow):
    def __init__(self, raw: ZmqInterfaceSource | None, denoised: ZmqInterfaceSource | None, *,
                 positions: np.ndarray | None = None, refresh_hz: float = 30.0, no_data_timeout: float = 5.0,
                 first_channel: int = 0, n_channels: int = 32, window_s: float = 0.5, uv_per_div: float = 100.0,
                 title: str = "livedenoise view (ephys)"):
        super().__init__()
        self.raw, self.den = raw, denoised
        self.sources = [s for s in (raw, denoised) if s is not None]
        self.positions = positions
        self.no_data_timeout = no_data_timeout
        self.no_data: list[str] = []
        self._warned: set[str] = set()
        self.warn_stderr = True
        self.paused = False
        self.rendered = 0
        self._heat = None
        self._tick_n = 0
        self.setWindowTitle(title)
        self._build_ui(first_channel, n_channels, window_s, uv_per_div)
        self.timer = QtCore.QTimer(self)
        self.timer.timeout.connect(self.tick)
        self.timer.start(max(1, int(1000 / refresh_hz)))

    def _build_ui(self, first, count, window_s, uv_per_div):
        central = QtWidgets.QWidget()
        outer = QtWidgets.QVBoxLayout(central)
        outer.setContentsMargins(4, 4, 4, 4)
        row = QtWidgets.QHBoxLayout()
        self.pause_btn = QtWidgets.QPushButton("Pause")
        self.pause_btn.setCheckable(True)
        self.pause_btn.toggled.connect(self.set_paused)
        row.addWidget(self.pause_btn)

        def spin(label, lo, hi, val, suffix="", decimals=None, tip=""):
            row.addWidget(QtWidgets.QLabel(label))
            box = QtWidgets.QDoubleSpinBox() if decimals is not None else QtWidgets.QSpinBox()
            if decimals is not None:
                box.setDecimals(decimals)
            box.setRange(lo, hi)
            box.setValue(val)
            box.setSuffix(suffix)
            box.setToolTip(tip)
            box.setKeyboardTracking(False)
            row.addWidget(box)
            return box

        self.first_box = spin("channels from", 0, 4095, first, tip="the stack starts at this channel and goes on in the chosen order")
        self.count_box = spin("count", 1, 4096, count)
        self.window_box = spin("window", 0.001, 60.0, window_s, " s", 3)
        self.gain_box = spin("gain", 0.1, 1e6, uv_per_div, " µV/div", 1,
                             tip="µV between neighbouring traces: smaller is more gain")
        row.addWidget(QtWidgets.QLabel("traces"))
        self.layout_box = QtWidgets.QComboBox()
        self.layout_box.addItems(["overlay", "side by side"])
        self.layout_box.currentIndexChanged.connect(self._relayout)
        row.addWidget(self.layout_box)
        row.addWidget(QtWidgets.QLabel("order"))
        self.order_box = QtWidgets.QComboBox()
        self.order_box.addItems(["probe depth", "channel number"])
        row.addWidget(self.order_box)
        row.addWidget(QtWidgets.QLabel("heat map"))
        self.heat_box = QtWidgets.QComboBox()
        names = [s.name for s in self.sources] + (["residual"] if self.raw and self.den else [])
        self.heat_box.addItems(names)
        if self.den is not None:
            self.heat_box.setCurrentText(self.den.name)
        row.addWidget(self.heat_box)
        row.addStretch(1)
        png = QtWidgets.QPushButton("PNG…")
        png.clicked.connect(lambda *_: self._ask_png())
        row.addWidget(png)
        outer.addLayout(row)

        split = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        self.traces = QtWidgets.QWidget()
        tl = QtWidgets.QHBoxLayout(self.traces)
        tl.setContentsMargins(0, 0, 0, 0)
        self.plot_a_widget, self.plot_b_widget = pg.PlotWidget(), pg.PlotWidget()
        self.plot_a, self.plot_b = self.plot_a_widget.getPlotItem(), self.plot_b_widget.getPlotItem()
        for p in (self.plot_a, self.plot_b):
            p.setLabel("bottom", "time", units="s")
            p.setMenuEnabled(False)
        self.plot_b.setYLink(self.plot_a)
        self.plot_b.setXLink(self.plot_a)
        self.curve_raw = self.plot_a.plot(pen=pg.mkPen((170, 170, 170), width=1))
        den_pen = pg.mkPen((255, 170, 0), width=1)
        self.curve_den_overlay = self.plot_a.plot(pen=den_pen)
        self.curve_den_side = self.plot_b.plot(pen=den_pen)
        tl.addWidget(self.plot_a_widget)
        tl.addWidget(self.plot_b_widget)
        self._relayout()
        split.addWidget(self.traces)
        self.heat = pg.GraphicsLayoutWidget()
        self.heat_plot = self.heat.addPlot(title="all channels")
        self.heat_plot.setLabel("bottom", "time", units="s")
        self.heat_plot.setLabel("left", "channel (probe order)")
        self.heat_item = pg.ImageItem(axisOrder="row-major")
        self.heat_item.setColorMap(pg.colormap.get("CET-D1"))
        self.heat_plot.addItem(self.heat_item)
        split.addWidget(self.heat)
        split.setSizes([900, 500])
        outer.addWidget(split, 1)
        self.setCentralWidget(central)
        self.status_label = QtWidgets.QLabel("waiting for data")
        self.statusBar().addWidget(self.status_label, 1)
        QtGui.QShortcut(QtGui.QKeySequence("Space"), self, activated=lambda: self.pause_btn.toggle())
        self.resize(1500, 900)

    def _relayout(self, *_):
        self.side_by_side = bool(self.layout_box.currentText() == "side by side" and self.raw and self.den)
        self.plot_b_widget.setVisible(self.side_by_side)
        self.plot_a.setTitle("raw" if self.side_by_side else " + ".join(s.name for s in self.sources))
        self.plot_b.setTitle("denoised")
        (self.curve_den_overlay if self.side_by_side else self.curve_den_side).setData([], [])
        self.curve_den = self.curve_den_side if self.side_by_side else self.curve_den_overlay

    def set_paused(self, paused: bool) -> None:
        self.paused = bool(paused)
        self.pause_btn.setText("Resume" if paused else "Pause")

    # ---------------------------------------------------------------- data
    def order(self, channels: np.ndarray) -> np.ndarray:
        """The channels with data, by channel number or by probe depth."""
        channels = np.asarray(channels)
        if self.order_box.currentText() == "channel number" or not len(channels):
            return channels
        top = int(channels.max()) + 1
        pos = self.positions if self.positions is not None and len(self.positions) >= top else neuropixels_positions(top)
        return channels[depth_order(pos[channels])]

    def _channels(self) -> np.ndarray:
        ids = [s.ring.channel_ids() for s in self.sources]
        return np.unique(np.concatenate(ids)) if ids else np.zeros(0, np.int64)

    def tick(self) -> None:
        self._tick_n += 1
        if not self.paused:
            self.render_now()
        if self._tick_n % 8 == 1:
            self.update_status()

    def render_now(self) -> bool:
        seen = self._channels()
        heads = [s.ring.head for s in self.sources if s.ring.head > 0]
        if not len(seen) or not heads:
            return False
        rate = max(s.ring.sample_rate for s in self.sources) or 1.0
        end = min(heads)  # the same samples on both sides: the denoised stream lags
        cap = min(s.ring.capacity for s in self.sources)
        n = int(min(cap, max(2, round(self.window_box.value() * rate))))
        order = self.order(seen)
        at = np.flatnonzero(order >= int(self.first_box.value())) if self.order_box.currentText() == "channel number" \
            else np.flatnonzero(order == int(self.first_box.value()))
        first = int(at[0]) if len(at) else 0
        chans = order[first:first + int(self.count_box.value())]
        spacing = float(self.gain_box.value())
        t0 = (end - n) / rate
        offsets = np.arange(len(chans), dtype=np.float32)[:, None]
        for src, curve in ((self.raw, self.curve_raw), (self.den, self.curve_den)):
            if src is None:
                continue
            x, _ = src.ring.read(chans, n, end)
            idx, y = minmax_decimate(x, MAX_POINTS)
            y = y / spacing + offsets
            tx = np.broadcast_to(t0 + idx / rate, y.shape)
            connect = np.ones(y.shape, bool)
            connect[:, -1] = False
            curve.setData(tx.ravel(), y.ravel(), connect=connect.ravel())
        ticks = [(float(i), str(int(c))) for i, c in enumerate(chans)]
        step = max(1, len(ticks) // 16)
        for p in (self.plot_a, self.plot_b):
            p.getAxis("left").setTicks([ticks[::step], []])
            p.setLabel("left", "channel (" + self.order_box.currentText() + ")")
        self.plot_a.setYRange(-1, len(chans), padding=0)
        self.plot_a.setXRange(t0, end / rate, padding=0)
        if self._tick_n % 3 == 0 or self.rendered == 0:
            self._render_heat(order, n, end, rate)
        self.rendered += 1
        return True

    def _render_heat(self, order: np.ndarray, n: int, end: int, rate: float) -> None:
        which = self.heat_box.currentText()
        if which == "residual":
            a, _ = self.raw.ring.read(order, n, end)
            b, _ = self.den.ring.read(order, n, end)
            x = a - b
        else:
            src = self.raw if which == (self.raw.name if self.raw else None) else self.den
            x, _ = src.ring.read(order, n, end)
        k = max(1, n // HEAT_COLUMNS)
        m = n // k
        img = x[:, : m * k].reshape(x.shape[0], m, k).mean(axis=2)
        self._heat = img
        lim = float(np.percentile(np.abs(img[:, :: max(1, m // 200)]), 99)) or 1.0
        self.heat_item.setImage(img, autoLevels=False, levels=(-lim, lim))
        self.heat_item.setRect(QtCore.QRectF((end - n) / rate, 0, n / rate, img.shape[0]))
        self.heat_plot.setTitle(f"all {img.shape[0]} channels: {which}")
        step = max(1, len(order) // 8)
        self.heat_plot.getAxis("left").setTicks([[(i + 0.5, str(int(order[i]))) for i in range(0, len(order), step)], []])

    # ---------------------------------------------------------------- status
    def status_fields(self) -> dict:
        f: dict = {"rendered": self.rendered, "paused": self.paused}
        for s in self.sources:
            st = s.status()
            f[s.name] = {"messages": st.messages, "samples": st.samples, "malformed": st.malformed,
                         "missing_messages": st.missing_messages, "gap_samples": st.gap_samples,
                         "channels": st.channels, "sample_rate": st.sample_rate, "msg_rate": st.msg_rate,
                         "head": st.head}
        if self.raw and self.den and self.raw.ring.head > 0 and self.den.ring.head > 0:
            f["lag_samples"] = int(self.raw.ring.head - self.den.ring.head)
        f["no_data"] = list(self.no_data)
        return f

    def update_status(self) -> str:
        self._check_no_data()
        f = self.status_fields()
        parts = []
        for s in self.sources:
            d = f[s.name]
            parts.append(
                f"{s.name}: {d['messages']} msgs ({d['msg_rate']:.0f}/s), {d['channels']} ch @ "
                f"{d['sample_rate'] / 1000:g} kHz, missing {d['missing_messages']} msgs / "
                f"{d['gap_samples']} samples, malformed {d['malformed']}")
        if "lag_samples" in f:
            rate = max(s.ring.sample_rate for s in self.sources) or 1
            parts.append(f"lag {f['lag_samples']} samples ({1000 * f['lag_samples'] / rate:.1f} ms)")
        return show_status(self.status_label, parts, self.paused, self.no_data)

    def _check_no_data(self) -> None:
        self.no_data = []
        for s in self.sources:
            msg = silent_source(self, s, s.status().first_message_s)
            if msg:
                self.no_data.append(msg)

    def export_png(self, path: str) -> None:
        self.render_now()
        if not self.grab().save(str(path)):
            raise OSError(f"could not write {path}")

    def _ask_png(self):
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Export view", "ephys.png", "PNG (*.png)")
        if path:
            self.export_png(path)

    def closeEvent(self, ev):
        self.timer.stop()
        for s in self.sources:
            s.stop(0.5)
        # linked views signal each other while Qt deletes them: unlink first (a pyqtgraph crash)
        self.plot_b.setXLink(None)
        self.plot_b.setYLink(None)
        super().closeEvent(ev)
