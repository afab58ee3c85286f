"""The commented nsmd.toml that packaging/install writes (`python -m nsmd.cli.config_template`):
every option of `nsmd run` with its default and its --help line, read from Config's fields and
the run command's parser, so a new option is in it without anyone remembering to add it."""

from __future__ import annotations

import argparse
import dataclasses
import textwrap

from nsmd.cli.main import TUNING, build_parser, hide_dependency_warnings

HEADER = """\
# nsmd's options, for `nsmd run --config /etc/nsmd/nsmd.toml` (the systemd unit's).
# Every option is commented out: the value shown is its default. NSMD_<OPTION> environment
# variables override this file, and command-line options override both.
"""


def run_options_help() -> dict[str, str]:
    """dest -> help of each `nsmd run` option."""
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a.help or "" for a in commands.choices["run"]._actions
            if a.help and a.help != argparse.SUPPRESS}


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def render() -> str:
    from nsmd.config import Config  # after main() or the caller filtered warnings

    helps = run_options_help()
    out = [HEADER]
    tuning = []
    for field in dataclasses.fields(Config):
        key = field.name.replace("_", "-")
        if field.default is dataclasses.MISSING:   # name: the host's name, read at start
            line = f'# {key} = "HOSTNAME"'
        else:
            line = f"# {key} = {toml_value(field.default)}"
        if field.name in helps:
            out += [textwrap.fill(helps[field.name], 92, initial_indent="# ",
                                  subsequent_indent="#   "), line, ""]
        else:
            tuning.append(line)
    out += [textwrap.fill(TUNING, 92, initial_indent="# ", subsequent_indent="# "), *tuning]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    hide_dependency_warnings()
    print(render(), end="")
