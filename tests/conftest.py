"""Shared test set-up: uvloop for async tests, and the rule that netns tests must run in CI."""

from __future__ import annotations

import os
import socket

import pytest
import uvloop

REQUIRE_NETNS = os.environ.get("NSMD_REQUIRE_NETNS") == "1"
_netns_outcomes = {"passed": 0, "other": 0}


def pytest_asyncio_loop_factories(config, item):
    return {"uvloop": uvloop.new_event_loop}


def pytest_runtest_logreport(report):
    if "netns" not in report.keywords:
        return
    if report.when == "call" and report.passed:
        _netns_outcomes["passed"] += 1
    elif report.skipped:
        _netns_outcomes["other"] += 1
        if REQUIRE_NETNS:
            # A skipped namespace test counts as failed in CI.
            report.outcome = "failed"
            report.longrepr = f"netns test skipped but NSMD_REQUIRE_NETNS=1: {report.longrepr}"


def pytest_sessionfinish(session, exitstatus):
    if REQUIRE_NETNS and _netns_outcomes["passed"] == 0 and session.testscollected:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print("\nNSMD_REQUIRE_NETNS=1 but no network-namespace test passed")


@pytest.fixture
def wire():
    """A local wire of a started engine between two faked TUN devices (datagram
    socketpairs): (engine, handle, client app end, endpoint app end)."""
    from nsmd.fastpath.engine import Engine

    engine = Engine()
    engine.start()
    socks = [*socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM),
             *socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)]
    client_app, client_tun, endpoint_app, endpoint_tun = socks
    for s in (client_app, endpoint_app):
        s.settimeout(0.3)
    handle = engine.add_wire(client_tun.fileno(), endpoint_tun.fileno())
    yield engine, handle, client_app, endpoint_app
    engine.stop()
    for s in socks:
        s.close()
