"""`livedenoise scanimage-path` and the shipped MATLAB files."""

from __future__ import annotations

import subprocess
import sys

from livedenoise.cli import main
from livedenoise.stream.scanimage import USER_FUNCTIONS, matlab_path

SHIPPED = ["livedenoise_publisher.m", "livedenoise_setup.m", "livedenoise_register.m", "private/ld_json.m"]


def test_folder_holds_every_user_function():
    folder = matlab_path()
    for name in [f"{fn}.m" for fn in USER_FUNCTIONS.values()] + SHIPPED:
        assert (folder / name).is_file(), name


def test_command_prints_the_folder(capsys):
    assert main(["scanimage-path"]) == 0
    assert capsys.readouterr().out.strip() == str(matlab_path())
    assert main(["scanimage-path", "--matlab", "-v"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"addpath('{matlab_path()}');"
    assert "frameAcquired" in out and "livedenoise_frameAcquired" in out


def test_console_entry_point():
    out = subprocess.run([sys.executable, "-m", "livedenoise", "scanimage-path"], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == str(matlab_path())
