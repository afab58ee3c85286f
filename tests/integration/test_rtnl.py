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


async def test_a_route_another_device_holds_is_never_taken(netns):
    """Routes are exclusive: a second device asking for the first one's prefix gets EEXIST
    and the route stays where it was (a vL3 peer's claim on a victim's /32, say)."""
    ns = netns("rtx")
    first, name1 = await namespaces.run_in(ns, tundev.create, tundev.InterfaceConfig(
        name="own0", addresses=["100.64.7.1/32"], routes=["100.64.7.9/32"], mtu=1500), True)
    second, name2 = await namespaces.run_in(ns, tundev.create, tundev.InterfaceConfig(
        name="thief0", addresses=["100.64.7.2/32"], routes=[], mtu=1500), True)
    try:
        with pytest.raises(OSError) as taken:
            await namespaces.run_in(ns, configure, name2, 1500, ["100.64.7.2/32"],
                                    ["100.64.7.9/32"])
        assert taken.value.errno == 17  # EEXIST
        (route,) = ip_json(ns, "route", "show", "100.64.7.9/32")
        assert route["dev"] == name1
    finally:
        for fds in (first, second):
            await namespaces.run_in(ns, tundev.remove, fds)
