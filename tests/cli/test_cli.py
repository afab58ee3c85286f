import subprocess
import sys

import pytest

from nsmd.cli.main import main


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "nsmd", *args], capture_output=True,
                          text=True, env=env, timeout=30)


def test_no_daemon_gives_one_line_that_says_what_to_do(tmp_path, capsys):
    code = main(["get", "services", "--api-socket", str(tmp_path / "none.sock")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert "cannot reach the daemon" in err[0] and "nsmd run" in err[0]


@pytest.mark.parametrize("args, message", [
    (["connect", "svc", "--label", "x"], "--label: expected key=value"),
    (["apply", "-f", "/no/such/file.yaml"], "cannot read /no/such/file.yaml"),
])
def test_client_side_errors_are_one_line(args, message, capsys, tmp_path):
    code = main(args + ["--api-socket", str(tmp_path / "none.sock")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and message in err[0]


def test_usage_errors_are_one_line_with_a_pointer_to_help():
    result = run("get", "everything")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "invalid choice" in line and "--help" in line


def test_bad_manifest_is_refused_before_reaching_the_daemon(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: [unclosed\n")
    code = main(["apply", "-f", str(bad), "--api-socket", str(tmp_path / "none.sock")])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and "bad.yaml:" in line and "not valid YAML" in line


def test_help_lists_every_command():
    out = run("--help").stdout
    for command in ("run", "apply", "delete", "get", "connect", "close", "monitor", "status",
                    "demo"):
        assert command in out
    assert "NSMD_STATE_DIR" in run("run", "--help").stdout


def test_run_refuses_bad_options_in_one_line(tmp_path):
    result = run("run", "--state-dir", "relative/dir", "--api-socket", str(tmp_path / "s"))
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert "state-dir: expected an absolute path" in line
