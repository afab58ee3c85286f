"""Walking argparse parsers (argparse keeps its subparsers only among a parser's actions):
the generated CLI reference and the completion scripts both need every command."""

from __future__ import annotations

import argparse
from collections.abc import Iterator


def subcommands(parser: argparse.ArgumentParser, prefix: str = "",
                ) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """(name, parser) of every command under `parser`, depth first ("ca issue", ...)."""
    for action in parser._actions:   # argparse keeps its subparsers only here
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield prefix + name, sub
                yield from subcommands(sub, f"{prefix}{name} ")
