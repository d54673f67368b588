"""Every verb's --help: each default said once, never "(default: None)"."""

import argparse

from livedenoise.cli import build_parser
from livedenoise.commands.args import HelpFormatter


def _parsers(parser, path=("livedenoise",)):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _parsers(child, path + (name,))


def test_every_default_is_said_once():
    seen = 0
    for path, parser in _parsers(build_parser()):
        assert parser.formatter_class is HelpFormatter or path == ("livedenoise",), path
        text = parser.format_help()
        assert "(default: None)" not in text, path
        fmt = parser._get_formatter()
        for action in parser._actions:
            line = fmt._get_help_string(action) or ""
            if "(default: " in line:
                assert line.lower().replace("%(default)s", "").count("default") == 1, (path, line)
        seen += 1
    assert seen > 15  # every verb and sub-verb was looked at
