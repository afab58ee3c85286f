"""`nsmd run`'s options, made from their one declaration (the fields of nsmd.config.Config,
declared with config.option): the argparse flags, the tuning epilog of --help, and the
values a command line gave. The TOML keys and NSMD_* variables (config.load) and the
commented nsmd.toml (config_template.py) come from the same fields.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from nsmd.config import Config


def key(field: dataclasses.Field) -> str:
    """The option's name in TOML and on the command line (without the dashes)."""
    return field.name.replace("_", "-")


def described(field: dataclasses.Field) -> str:
    """Its --help text, with the default where the text does not say it."""
    text = field.metadata["help"]
    default = field.default
    if default in ("", None, False, dataclasses.MISSING) or "(default" in text or \
            "(none:" in text or "(0:" in text or "(1:" in text:
        return text
    return f"{text} (default {default:g})" if isinstance(default, float) else \
        f"{text} (default {default})"


def flagged() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(Config) if f.metadata["flag"]]


def tuning() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(Config) if not f.metadata["flag"]]


def add_run_options(parser: argparse.ArgumentParser) -> None:
    for field in flagged():
        meta: dict[str, Any] = dict(field.metadata)
        kwargs: dict[str, Any] = {"help": described(field)}
        if isinstance(field.default, bool):
            kwargs.update(action="store_true", default=None)
        elif meta["repeat"]:
            kwargs.update(action="append")
        elif isinstance(field.default, int | float):
            kwargs.update(type=type(field.default))
        if meta["metavar"]:
            kwargs["metavar"] = meta["metavar"]
        if meta["choices"]:
            kwargs["choices"] = meta["choices"]
        parser.add_argument(f"--{key(field)}", **kwargs)


def tuning_epilog() -> str:
    return "Tuning, in the TOML file or NSMD_* variables only: " + "; ".join(
        f"{key(f)} ({_shown(f.default)}: {f.metadata['help']})" for f in tuning()) + "."


def given(args: argparse.Namespace) -> dict[str, Any]:
    """The options the command line gave (None: not given), as Config takes them."""
    values = {}
    for field in flagged():
        value = getattr(args, field.name)
        if field.metadata["repeat"] and value is not None:
            value = ",".join(value)
        values[field.name] = value
    return values


def _shown(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
