"""The commented nsmd.toml that packaging/install writes (`python -m nsmd.cli.config_template`):
every option of `nsmd run` with its default and its help, from the options' one
declaration (nsmd.config.Config), so a new option is in it without anyone adding it."""

from __future__ import annotations

import dataclasses
import textwrap

from nsmd.cli.options import described, flagged, key, tuning
from nsmd.config import Config

HEADER = """\
# nsmd's options, for `nsmd run --config /etc/nsmd/nsmd.toml` (the systemd unit's).
# Every option is commented out: the value shown is its default. NSMD_<OPTION> environment
# variables override this file, and command-line options override both.
"""


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def render() -> str:
    out = [HEADER]
    for group, fields in (("", flagged()), ("Tuning (TOML and NSMD_* only).", tuning())):
        if group:
            out += [f"# {group}", ""]
        for field in fields:
            value = '"HOSTNAME"' if field.default is dataclasses.MISSING else \
                toml_value(field.default)
            out += [textwrap.fill(described(field), 92, initial_indent="# ",
                                  subsequent_indent="#   "), f"# {key(field)} = {value}", ""]
    return "\n".join(out)


def effective(config: Config, sources: dict[str, str]) -> str:
    """The configuration in force, as TOML, each line saying where its value came from."""
    lines = ["# nsmd's effective configuration (`nsmd run --check-config`): it would start"]
    for field in dataclasses.fields(config):
        value = toml_value(getattr(config, field.name))
        lines.append(f"{key(field)} = {value}  # {sources.get(field.name, 'default')}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
