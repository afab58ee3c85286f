"""nsmd under systemd: the notifications it sends (Type=notify: READY, WATCHDOG pets,
STOPPING) and the unit file scripts/install-service installs, checked by systemd itself."""

from __future__ import annotations

import os
import socket
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def messages(server: socket.socket, seconds: float) -> list[str]:
    got = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        server.settimeout(left)
        try:
            got.append(server.recv(4096).decode())
        except TimeoutError:
            break
    return got


def test_ready_watchdog_and_stopping_are_notified(daemon, tmp_path):
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        d = daemon("sd", env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
        first = messages(server, 1.05)
        assert first[0] == f"READY=1\nSTATUS=serving on {d.socket}", first
        assert first[1:].count("WATCHDOG=1") >= 4, first   # every 200 ms
        d.stop()
        assert messages(server, 1)[-1] == "STOPPING=1\nSTATUS=stopping"


def test_the_installed_unit_passes_systemd_s_own_check(tmp_path):
    env = dict(os.environ, NSMD_UNIT_DIR=str(tmp_path / "units"),
               NSMD_CONFIG_DIR=str(tmp_path / "etc"))
    out = subprocess.run([os.path.join(ROOT, "scripts", "install-service")], env=env,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    unit = tmp_path / "units" / "nsmd.service"
    assert f"installed {unit}" in out
    text = unit.read_text()
    assert f"ExecStart={ROOT}/.venv/bin/nsmd run --config " in text
    for line in ("Type=notify", "WatchdogSec=10", "Restart=on-failure", "NoNewPrivileges=yes"):
        assert line in text.splitlines()
    assert "CAP_NET_ADMIN" in text.split("CapabilityBoundingSet=")[1].splitlines()[0]
    check = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0 and not check.stderr.strip(), check.stderr
    # the config it wrote is one the daemon accepts (every option commented out)
    config = tmp_path / "etc" / "nsmd.toml"
    from nsmd import config as nsmd_config
    assert nsmd_config.load({}, str(config), environ={}).state_dir == "/var/lib/nsmd"
