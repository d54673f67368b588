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


@pytest.fixture(autouse=True)
def _delete_windows():
    """Windows closed in a test are deleted before the next one (no teardown at interpreter exit)."""
    yield
    from PySide6 import QtCore, QtWidgets

    app = QtWidgets.QApplication.instance()
    if app is None:
        return
    for w in app.topLevelWidgets():
        w.close()
        w.deleteLater()
    # Let Qt delete them now, on this thread; a forced gc.collect() here could
    # finalise Python wrappers whose C++ objects Qt is deleting at the same time.
    for _ in range(3):
        QtCore.QCoreApplication.sendPostedEvents(None, QtCore.QEvent.Type.DeferredDelete)
        app.processEvents()


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


