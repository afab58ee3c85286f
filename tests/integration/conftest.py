"""Fixtures for tests with real network namespaces, TUN devices and daemons.

Every namespace carries a per-test unique prefix and is deleted on teardown, also on
failure; every daemon is stopped by the PID we started.
"""

from __future__ import annotations

import os
import secrets

import pytest

from nsmd.testing.sandbox import DaemonProc, Namespaces, remove_leftover_devices


def pytest_collection_modifyitems(items):
    for item in items:
        if "/integration/" in str(item.path):
            item.add_marker(pytest.mark.netns)


@pytest.fixture(autouse=True)
def _need_root():
    if os.geteuid() != 0 or not os.path.exists("/dev/net/tun"):
        pytest.skip("needs root and /dev/net/tun")


@pytest.fixture
def netns():
    """make(tag) -> a new namespace named nsmdt-<random>-<tag> (lo up)."""
    spaces = Namespaces(f"nsmdt-{secrets.token_hex(3)}")
    yield spaces.make
    spaces.cleanup()


@pytest.fixture
def daemon(tmp_path):
    """make(name) -> a started daemon with its own state dir; stopped at teardown."""
    started: list[DaemonProc] = []

    def make(name: str = "node-1", netns: str = "", args: tuple = (),
             env: dict | None = None, socket: str = "", nsmd: tuple = ()) -> DaemonProc:
        d = DaemonProc(str(tmp_path / name), name, netns, args, env, socket, nsmd)
        os.makedirs(d.state_dir, exist_ok=True)
        started.append(d.start())
        return d

    yield make
    for d in started:
        d.stop()
        # Devices are persistent on purpose; a finished test must leave none behind.
        remove_leftover_devices(d)


