"""Modules moved by the layout of docs/architecture.md still import under their old names, as the same module."""

import importlib
import subprocess
import sys

import pytest

from livedenoise import MOVED


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_module_name_is_the_new_module(old):
    new = importlib.import_module(MOVED[old])
    with pytest.warns(DeprecationWarning, match=MOVED[old].replace(".", r"\.")):
        code = f"import importlib, warnings; warnings.simplefilter('error'); importlib.import_module({old!r})"
        # a fresh interpreter sees the first import of the old name, which is the one that warns
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert r.returncode != 0 and "DeprecationWarning" in r.stderr, r.stderr
        sys.modules.pop(old, None)
        assert importlib.import_module(old) is new


def test_old_from_imports_keep_working():
    r = subprocess.run([sys.executable, "-W", "ignore::DeprecationWarning", "-c",
                        "from livedenoise.models.readers_ephys import open_recording\n"
                        "from livedenoise.models.readers import open_movie\n"
                        "from livedenoise.models import interp2d\n"
                        "import livedenoise.io.readers as r\n"
                        "assert open_movie is r.open_movie and interp2d.__name__ == 'livedenoise.models.nets.interp2d'\n"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
