"""nsmd under systemd: the notifications it sends (Type=notify: READY, WATCHDOG pets,
STOPPING). The unit file packaging/install installs is checked in test_install.py."""

from __future__ import annotations

import os
import socket
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
