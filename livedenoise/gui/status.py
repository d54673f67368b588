"""The status bar both viewer windows share: silent-source warnings and the label's text."""

from __future__ import annotations

import sys


def silent_source(window, source, first_s: float | None) -> str | None:
    """The message for a source that has sent nothing for `window.no_data_timeout` s, warned on stderr once."""
    if first_s is not None or source.seconds_since_start() <= window.no_data_timeout:
        return None
    msg = f"no data on {source.endpoint} ({source.name}) after {window.no_data_timeout:g} s"
    if msg not in window._warned and window.warn_stderr:
        window._warned.add(msg)
        print(f"livedenoise view: {msg}; is the publisher running?", file=sys.stderr)
    return msg


def show_status(label, parts: list[str], paused: bool, no_data: list[str]) -> str:
    """Join the parts, put PAUSED and any no-data messages first (in red), set the label; returns the text."""
    text = " | ".join(parts)
    if paused:
        text = "PAUSED | " + text
    if no_data:
        text = " ; ".join(no_data) + " | " + text
    label.setStyleSheet("color: #c33;" if no_data else "")
    label.setText(text)
    return text
