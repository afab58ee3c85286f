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


def test_check_config_prints_each_value_with_its_source(tmp_path):
    import os
    import subprocess
    import sys

    conf = tmp_path / "nsmd.toml"
    conf.write_text('log-level = "debug"\nengines = 2\n')
    env = dict(os.environ, NSMD_ENGINES="3", NSMD_TUNNEL_PORT="40000")
    out = subprocess.run([sys.executable, "-m", "nsmd", "run", "--config", str(conf),
                          "--state-dir", str(tmp_path / "s"), "--check-config"],
                         capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert f'log-level = "debug"  # {conf}' in lines
    assert "engines = 3  # NSMD_ENGINES" in lines            # the variable beats the file
    assert f'state-dir = "{tmp_path}/s"  # command line' in lines
    assert 'api-socket = "/run/nsmd/nsmd.sock"  # default' in lines
    assert not (tmp_path / "s").exists()                      # nothing started
    bad = subprocess.run([sys.executable, "-m", "nsmd", "run", "--config", str(conf),
                          "--state-dir", "relative", "--check-config"],
                         capture_output=True, text=True, env=env, timeout=30)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "state-dir" in bad.stderr
