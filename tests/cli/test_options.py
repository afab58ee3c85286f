"""`nsmd run`'s options come from one declaration: every Config field is a flag or a tuning
option in --help, and what a flag gives is what Config receives."""

import dataclasses

from nsmd.cli import options
from nsmd.cli.main import build_parser
from nsmd.config import Config


def run_args(*argv: str):
    return build_parser().parse_args(["run", *argv])


def test_every_flag_reaches_its_field():
    for field in options.flagged():
        flag = f"--{options.key(field)}"
        if isinstance(field.default, bool):
            argv, expected = [flag], True
        elif field.metadata["choices"]:
            argv, expected = [flag, field.metadata["choices"][0]], field.metadata["choices"][0]
        elif isinstance(field.default, int):
            argv, expected = [flag, "7"], 7
        else:
            argv, expected = [flag, "x"], "x"
        assert options.given(run_args(*argv))[field.name] == expected, field.name
    assert options.given(run_args("--federate", "a=1", "--federate", "b=2"))["federate"] == \
        "a=1,b=2"
    assert set(options.given(run_args()).values()) == {None}   # nothing given: no override


def test_every_option_is_in_help_once():
    text = build_parser()._subparsers._group_actions[0].choices["run"].format_help()
    for field in dataclasses.fields(Config):
        name = options.key(field)
        assert (f"--{name}" in text) != (f"{name} (" in options.tuning_epilog()), name
