"""What a user's terminal shows when a command fails: exactly nsmd's one line, nothing a
dependency printed (py-spiffe's DSA deprecation under cryptography 51 once came first).

Runs the installed `nsmd` console script, the one users run: the venv's own, or the one
NSMD_CLI names (scripts/check-newest points it at a fresh venv of the newest releases
pyproject.toml allows, which is where such warnings appear first)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from nsmd.cli.main import COMMANDS, build_parser

NSMD = os.environ.get("NSMD_CLI") or os.path.join(os.path.dirname(sys.executable), "nsmd")
NO_DAEMON = "/nonexistent/nsmd.sock"
# One failing invocation per command (and per `ca` subcommand), and what its line says.
ERROR_PATHS = {
    "run": (["run", "--state-dir", "relative/dir", "--api-socket", NO_DAEMON],
            "nsmd run: state-dir: expected an absolute path"),
    "apply": (["apply", "-f", "/no/such/file.yaml", "--api-socket", NO_DAEMON],
              "nsmd apply: cannot read /no/such/file.yaml"),
    "delete": (["delete", "service", "x", "--api-socket", NO_DAEMON],
               "nsmd delete: cannot reach the daemon"),
    "get": (["get", "services", "--api-socket", NO_DAEMON], "nsmd get: cannot reach the daemon"),
    "connect": (["connect", "svc", "--api-socket", NO_DAEMON],
                "nsmd connect: cannot reach the daemon"),
    "close": (["close", "x", "--api-socket", NO_DAEMON], "nsmd close: cannot reach the daemon"),
    "monitor": (["monitor", "--api-socket", NO_DAEMON], "nsmd monitor: cannot reach the daemon"),
    "status": (["status", "--api-socket", NO_DAEMON], "nsmd status: cannot reach the daemon"),
    "ca init": (["ca", "init", "--state-dir", "/nonexistent", "--trust-domain", "bad td"],
                "nsmd ca: trust-domain: Invalid trust domain"),
    "ca issue": (["ca", "issue", "spiffe://example.org/w", "--state-dir", "/nonexistent",
                  "--out", "/nonexistent/out"], "nsmd ca: no CA in /nonexistent/ca"),
    "ca renew": (["ca", "renew", "/nonexistent", "--state-dir", "/nonexistent"],
                 "nsmd ca: identity-dir: /nonexistent/svid.pem is missing"),
    "ca print": (["ca", "print", "/nonexistent"],
                 "nsmd ca: identity-dir: /nonexistent/svid.pem is missing"),
    "ca verify": (["ca", "verify", "/nonexistent"],
                  "nsmd ca: identity-dir: /nonexistent/svid.pem is missing"),
    "doctor": (["doctor", "-o", "xml"], "nsmd doctor: error: argument -o/--output: invalid"),
    "demo": (["demo", "--count", "many"], "nsmd demo: error: argument --count: invalid int"),
    "completion": (["completion", "fish"], "nsmd completion: error: argument SHELL: invalid"),
    "": ([], "nsmd: error: the following arguments are required: COMMAND"),
}


def test_every_command_has_an_error_path_here():
    ca = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
              ).choices["ca"]
    ca_commands = next(a for a in ca._actions if isinstance(a, argparse._SubParsersAction))
    assert set(ERROR_PATHS) == {*COMMANDS, *(f"ca {c}" for c in ca_commands.choices),
                                ""} - {"ca"}


def test_the_cli_under_test_exists():
    # a missing binary must fail the step (scripts/check-newest), never skip it
    assert os.access(NSMD, os.X_OK), f"no nsmd executable at {NSMD}"


@pytest.mark.parametrize("command", sorted(ERROR_PATHS))
def test_a_failing_command_prints_only_its_own_line(command):
    args, expected = ERROR_PATHS[command]
    result = subprocess.run([NSMD, *args], capture_output=True, text=True, timeout=30,
                            env={k: v for k, v in os.environ.items()
                                 if k not in ("PYTHONWARNINGS", "NSMD_API_SOCKET")})
    assert result.returncode != 0
    assert result.stderr.splitlines() == [result.stderr.strip()], result.stderr
    assert result.stderr.startswith(expected), result.stderr
