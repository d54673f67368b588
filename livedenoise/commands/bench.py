"""`livedenoise bench <what>`: benchmarks.

Subcommands register themselves like verbs (a module exposing
``register(subparsers)``): `engine` (livedenoise.export.bench_engine) always;
`stream` (livedenoise.stream.bench) and `ephys`
(livedenoise.stream.openephys.bench) when those modules are installed.
"""

from __future__ import annotations

import importlib
import importlib.util

SUBCOMMANDS = [
    "livedenoise.export.bench_engine",  # engine
    "livedenoise.stream.bench",  # stream
    "livedenoise.stream.openephys.bench",  # ephys
]


def _present(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package is missing
        return False


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="benchmarks: engine backends, the live stream, the ephys sidecar",
        description="Benchmarks. Run `livedenoise bench <what> --help` for each.",
    )
    sub = p.add_subparsers(dest="bench", metavar="<what>")
    for name in SUBCOMMANDS:
        if _present(name):
            importlib.import_module(name).register(sub)

    def _help(args) -> int:
        p.print_help()
        return 2

    p.set_defaults(func=_help)
