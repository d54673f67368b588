"""`livedenoise bench <what>`: the benchmark verbs, `engine`, `stream` and `ephys`.

Each subcommand lives with what it measures and registers itself like a verb
(``register(subparsers)``): `engine` (livedenoise.export.bench_engine), `stream`
(livedenoise.stream.bench), `ephys` (livedenoise.stream.openephys.bench).
"""

from __future__ import annotations


def register(subparsers) -> None:
    from livedenoise.export import bench_engine
    from livedenoise.stream import bench as bench_stream
    from livedenoise.stream.openephys import bench as bench_ephys

    p = subparsers.add_parser(
        "bench",
        help="benchmarks: engine backends, the live stream, the ephys sidecar",
        description="Benchmarks. Run `livedenoise bench <what> --help` for each.",
    )
    sub = p.add_subparsers(dest="bench", metavar="<what>")
    for module in (bench_engine, bench_stream, bench_ephys):
        module.register(sub)

    def _help(args) -> int:
        p.print_help()
        return 2

    p.set_defaults(func=_help)
