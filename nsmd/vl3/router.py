"""A vL3 endpoint's router: a network namespace where its clients' vWires and its mesh
vWires to the other endpoints end, and the kernel forwards between them.

The routes are the vWires' own: a client's /32 on its endpoint-side device, a peer
endpoint's subnet on the mesh vWire to it. A new client costs one route on its own
endpoint and nothing anywhere else; a new endpoint one mesh vWire per other endpoint.
"""

from __future__ import annotations

from nsmd import netns, tundev

NETNS_PREFIX = "nsmd-vl3-"


def default_netns(endpoint: str) -> str:
    """The namespace a vL3 endpoint without `nsmd.netns` routes in (the daemon creates it
    and removes it with the endpoint)."""
    return NETNS_PREFIX + endpoint


async def prepare(ns: str) -> None:
    """Creates the router namespace if it is ours to create, and turns on forwarding."""
    if not ns.startswith("/"):
        await netns.create_named(ns)
    await netns.run_in(ns, _forward)


async def remove(ns: str, endpoint: str) -> None:
    if ns == default_netns(endpoint):
        await netns.remove_named(ns)


def _forward() -> None:
    tundev.write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")
    tundev.write_sysctl("/proc/sys/net/ipv6/conf/all/forwarding", "1")
