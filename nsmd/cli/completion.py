"""`nsmd completion bash|zsh`: a completion script made by shtab from the parsers
themselves, so every command, option and choice completes without a list to keep."""

from __future__ import annotations

import argparse

from nsmd.cli.parsers import subcommands

# what an option's metavar says it takes: completed as file or directory names
FILE_METAVARS = {"FILE", "PEM", "PATH", "TRUST_DOMAIN=BUNDLE.pem"}
DIR_METAVARS = {"DIR"}


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    import shtab  # only here: the other commands start without it

    for _, sub in [("", parser), *subcommands(parser)]:
        for action in sub._actions:
            if action.metavar in FILE_METAVARS:
                action.complete = shtab.FILE  # type: ignore[attr-defined]
            elif action.metavar in DIR_METAVARS:
                action.complete = shtab.DIRECTORY  # type: ignore[attr-defined]
    return shtab.complete(parser, shell=shell)
