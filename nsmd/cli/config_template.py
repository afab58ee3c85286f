"""The commented nsmd.toml that packaging/install writes (`python -m nsmd.cli.config_template`):
every option of `nsmd run` with its default and its help, from the options' one
declaration (nsmd.config.Config), so a new option is in it without anyone adding it."""

from __future__ import annotations

import dataclasses
import textwrap

from nsmd.cli.options import described, flagged, key, tuning

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


if __name__ == "__main__":
    print(render(), end="")
