"""The single entry point: `livedenoise <verb>`.

Each verb lives in `livedenoise/commands/<verb>.py` and exposes
``register(subparsers)`` which adds its parser and sets ``func`` to a callable
taking the parsed arguments and returning an exit status. Verbs not built yet
are simply absent from this list's modules.
"""

from __future__ import annotations

import os

# Before anything loads PyTorch: OpenMP threads that spin-wait for work make a 2-thread `train` 3-10x slower
# than 1 thread on a CPU other processes also use (docs/benchmarks.md, "Threads"); passive waiting costs
# nothing measurable on an idle machine. A value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import importlib  # noqa: E402
import importlib.util  # noqa: E402
import sys  # noqa: E402

from livedenoise import __version__  # noqa: E402
from livedenoise.errors import UserError  # noqa: E402

# Order is the order shown in --help.
VERBS = [
    "simulate",
    "train",
    "import_model",
    "tune_innovation",
    "denoise",
    "export",
    "bench",
    "serve",
    "replay",
    "listen",
    "demo",
    "view",
    "sidecar",
    "scanimage_path",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="livedenoise",
        description=(
            "Real-time self-supervised denoising for two-photon imaging, Neuropixels "
            "recordings and fMRI runs. Run `livedenoise <verb> --help` for each verb."
        ),
    )
    parser.add_argument("--version", action="version", version=f"livedenoise {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="<verb>")
    for verb in VERBS:
        name = f"livedenoise.commands.{verb}"
        if importlib.util.find_spec(name) is None:
            continue
        importlib.import_module(name).register(sub)
    _one_help_format(parser)
    return parser


def _one_help_format(parser: argparse.ArgumentParser) -> None:
    """Every verb and sub-verb formats its --help the same way (commands/args.py: HelpFormatter)."""
    from livedenoise.commands.args import HelpFormatter

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                child.formatter_class = HelpFormatter
                _one_help_format(child)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"livedenoise {args.verb}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"livedenoise {args.verb}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `livedenoise ... | head`: the reader left; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    raise SystemExit(main())
