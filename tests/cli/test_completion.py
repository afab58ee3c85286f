"""`nsmd completion bash` sourced in a real bash: commands, kinds, options and file names
complete as a user would press TAB."""

from __future__ import annotations

import subprocess
import sys

COMPLETE = r"""
source <("$PYTHON" -m nsmd completion bash)
complete_words() {
  COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
  COMP_LINE="${COMP_WORDS[*]}"; COMP_POINT=${#COMP_LINE}; COMPREPLY=()
  _shtab_nsmd "${COMP_WORDS[0]}" "${COMP_WORDS[-1]}" "${COMP_WORDS[-2]}"
  printf '%s\n' "${COMPREPLY[@]}"
}
complete_words "$@"
"""


def complete(*words: str) -> list[str]:
    result = subprocess.run(["bash", "-c", COMPLETE, "complete", *words], capture_output=True,
                            text=True, timeout=30, env={"PYTHON": sys.executable,
                                                        "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0 and not result.stderr, result.stderr
    return result.stdout.split()


def test_bash_completes_commands_kinds_options_and_files(tmp_path):
    assert complete("nsmd", "ge") == ["get"]
    assert {"services", "nse", "peers", "conn"} <= set(complete("nsmd", "get", ""))
    assert complete("nsmd", "run", "--metrics-l") == ["--metrics-listen"]
    assert complete("nsmd", "ca", "re") == ["renew"]
    (tmp_path / "web.yaml").write_text("")
    assert complete("nsmd", "apply", "-f", str(tmp_path / "we")) == [str(tmp_path / "web.yaml")]


def test_zsh_script_is_made_too():
    result = subprocess.run([sys.executable, "-m", "nsmd", "completion", "zsh"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stdout.startswith("#compdef nsmd")
