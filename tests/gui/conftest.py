"""GUI tests run on Qt's offscreen platform (set before anything imports Qt)."""

import os

os.environ["QT_QPA_PLATFORM"] = "offscreen"

import importlib.util  # noqa: E402

import pytest  # noqa: E402

MISSING = [m for m in ("PySide6", "pyqtgraph", "zmq") if importlib.util.find_spec(m) is None]
if MISSING:  # the gui extra is not installed: nothing here can run
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def qapp():
    from livedenoise.gui.app import qt_app

    app = qt_app()
    yield app
    app.processEvents()


_CLOSED: list = []
_STATUS: list = []


@pytest.fixture(autouse=True)
def _close_windows():
    """Close (hide, stop timers and receiver threads) every window a test opened, but never
    delete it: PySide6 6.11 sometimes segfaults in ~QGraphicsScene while Qt deletes a
    pyqtgraph window (seen with the ephys heat map). Closed windows are kept until exit."""
    yield
    from PySide6 import QtWidgets

    app = QtWidgets.QApplication.instance()
    if app is None:
        return
    for w in app.topLevelWidgets():
        if w.isVisible():
            w.close()
            _CLOSED.append(w)
    app.processEvents()


def pytest_sessionfinish(session, exitstatus):
    _STATUS.append(int(exitstatus))


def pytest_unconfigure(config):
    """Leave without interpreter teardown, which would delete the kept windows (see above)."""
    if _CLOSED and _STATUS:
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_STATUS[-1])


@pytest.fixture
def publishers():
    made = []

    from gui_helpers import Publisher

    def make():
        p = Publisher()
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


