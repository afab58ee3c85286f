"""A device's netlink set-up against the real kernel: up, MTU, addresses and routes as
`ip` shows them (in the worker's namespace), replaced idempotently, the kernel's errors
as OSError."""

import json
import socket
import subprocess

import pytest

from nsmd import netns as namespaces
from nsmd import rtnl, tundev


def ip_json(ns: str, *args: str) -> list:
    out = subprocess.run(["ip", "-j", "-n", ns, *args], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out or "[]")


def configure(name: str, mtu: int, addresses: list[str], routes: list[str]) -> None:
    rtnl.thread_rtnl().configure(socket.if_nametoindex(name), mtu, addresses, routes)


async def test_a_device_comes_up_addressed_and_routed_and_errors_carry_errno(netns):
    ns = netns("rtnl")
    addresses = ["100.64.7.2/32", "fd00:64::2/128"]
    routes = ["100.64.7.1/32", "100.64.8.0/24", "fd00:64::1/128"]
    fds, name = await namespaces.run_in(ns, tundev.create, tundev.InterfaceConfig(
        name="rt0", addresses=addresses, routes=routes, mtu=1500), True)
    try:
        # again, with another MTU: addresses and routes are replaced, no EEXIST
        await namespaces.run_in(ns, configure, name, 1400, addresses, routes)
        (link,) = ip_json(ns, "link", "show", name)
        assert link["mtu"] == 1400 and "UP" in link["flags"]
        got = {f"{a['local']}/{a['prefixlen']}" for a in ip_json(ns, "addr", "show", name)[0]
               ["addr_info"] if a.get("scope") == "global"}
        assert got == set(addresses)
        v4 = {r["dst"] for r in ip_json(ns, "route", "show", "dev", name)}
        v6 = {r["dst"] for r in ip_json(ns, "-6", "route", "show", "dev", name)}
        assert {"100.64.7.1", "100.64.8.0/24"} <= v4 and "fd00:64::1" in v6
        with pytest.raises(OSError) as failed:  # a route through a device that is gone
            await namespaces.run_in(ns, lambda: rtnl.thread_rtnl().configure(
                10_000, routes=["100.64.9.0/24"]))
        assert failed.value.errno == 19  # ENODEV, from the kernel's ack
        await namespaces.run_in(ns, configure, name, 1300, addresses, routes)  # still works
        assert ip_json(ns, "link", "show", name)[0]["mtu"] == 1300
    finally:
        await namespaces.run_in(ns, tundev.remove, fds)
