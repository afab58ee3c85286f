"""TUN (and, for ETHERNET vWires, TAP) devices: create, address, route, re-attach after a
restart, remove.

Every function here runs on a thread that is already inside the target network namespace
(nsmd.netns.run_in): pytun's ioctls and netlink sockets (rtnl.py) act in the calling
thread's namespace. Devices are made persistent (TUNSETPERSIST) so that a daemon restart
finds them with their addresses and routes; remove() clears the flag before the last close.
"""

from __future__ import annotations

import dataclasses
import fcntl
import ipaddress
import os
import socket

import pytun
from pyroute2 import IPRoute

from nsmd import rtnl
from nsmd.errors import DataplaneError

TUNSETPERSIST = 0x400454CB
TUNSETOFFLOAD = 0x400454D0
TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6 = 0x01, 0x02, 0x04
# With IFF_VNET_HDR every packet starts with a struct virtio_net_hdr (10 bytes): it says
# whether the packet is a TCP super-packet (GSO) and where its checksum still has to go.
VNET_HDR_BYTES = 10


@dataclasses.dataclass
class InterfaceConfig:
    name: str                      # exact name, or a kernel pattern with %d
    addresses: list[str]           # CIDRs, e.g. 169.254.0.1/32
    routes: list[str]              # prefixes routed into the interface
    mtu: int
    offload: bool = False          # vnet headers + TSO: TCP super-packets pass whole
    queues: int = 1                # >1: IFF_MULTI_QUEUE, one fd per queue (per engine)
    tap: bool = False              # a TAP device (Ethernet frames): an ETHERNET vWire
    mac: str = ""                  # the TAP device's address ("" = the kernel's choice)


def create(cfg: InterfaceConfig, exclusive: bool) -> tuple[list[int], str]:
    """Creates, configures and brings up a TUN device; returns (one fd per queue, name).

    exclusive: fail if a device of that name exists (explicit names asked by a client).
    """
    flags = _flags(cfg.offload, cfg.queues, cfg.tap)
    try:
        dev = pytun.TunTapDevice(name=cfg.name,
                                 flags=flags | (pytun.IFF_TUN_EXCL if exclusive else 0))
    except pytun.Error as err:
        if "busy" in str(err).lower() or "exists" in str(err).lower():
            raise DataplaneError(f"interface {cfg.name} already exists") from None
        raise DataplaneError(f"cannot create TUN device {cfg.name}: {err}") from None
    fds = [os.dup(dev.fileno())]
    name = dev.name
    try:
        dev.persist(True)
        dev.close()
        fds += [_open_queue(name, flags) for _ in range(cfg.queues - 1)]
        if cfg.offload:
            fcntl.ioctl(fds[0], TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
        configure(name, cfg)
    except BaseException:
        remove(fds)
        raise
    return fds, name


def _open_queue(name: str, flags: int) -> int:
    """Another fd on an existing device: a queue of a multi-queue device, or the device."""
    try:
        dev = pytun.TunTapDevice(name=name, flags=flags)
    except pytun.Error as err:
        raise DataplaneError(f"cannot open a queue of {name}: {err}") from None
    fd = os.dup(dev.fileno())
    dev.close()
    return fd


def attach(name: str, offload: bool = False, queues: int = 1, tap: bool = False) -> list[int]:
    """Re-opens a persistent TUN device left by an earlier run of the daemon (with the
    vnet-header mode and queue count it was created with); one fd per queue."""
    # TUNSETIFF would create a missing device, so look first (netlink: this thread's netns;
    # /sys would show the namespace sysfs was mounted in).
    try:
        index = socket.if_nametoindex(name)
        with IPRoute() as ipr:  # only after a restart: not worth a kept socket
            links = ipr.get_links(index)
    except OSError:  # no such device
        links = []
    if not links or links[0].get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") != "tun":
        raise DataplaneError(f"interface {name} is gone")
    fds: list[int] = []
    try:
        for _ in range(queues):
            fds.append(_open_queue(name, _flags(offload, queues, tap)))
        if offload:
            fcntl.ioctl(fds[0], TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds


def _flags(offload: bool, queues: int = 1, tap: bool = False) -> int:
    return ((pytun.IFF_TAP if tap else pytun.IFF_TUN) | pytun.IFF_NO_PI
            | (pytun.IFF_VNET_HDR if offload else 0)
            | (pytun.IFF_MULTI_QUEUE if queues > 1 else 0))


def remove(fds: list[int]) -> None:
    """Removes the device behind `fds` (all its queues): clears persistence, closes them."""
    try:
        fcntl.ioctl(fds[0], TUNSETPERSIST, 0)
    finally:
        for fd in fds:
            os.close(fd)


def remove_by_name(name: str) -> bool:
    """Removes a persistent device we no longer hold an fd for; False if it is not there."""
    for queues, tap in ((1, False), (2, False), (1, True)):  # the flags must match
        try:
            fds = attach(name, queues=queues, tap=tap)
        except DataplaneError:
            continue
        remove(fds)
        return True
    return False


def configure(name: str, cfg: InterfaceConfig) -> None:
    ipv6 = any(ipaddress.ip_interface(a).version == 6 for a in cfg.addresses + cfg.routes)
    if not ipv6:
        # An IPv4-only vWire: no link-local address, no MLD/RS chatter into the tunnel.
        write_sysctl(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6", "1")
    try:
        # the index by ioctl in this thread's namespace (a netlink lookup dumps every link)
        rtnl.thread_rtnl().configure(socket.if_nametoindex(name), cfg.mtu, cfg.addresses,
                                     cfg.routes, cfg.mac)
    except OSError as err:
        raise DataplaneError(f"cannot configure {name}: {err}") from None


def write_sysctl(path: str, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except FileNotFoundError:
        pass  # IPv6 is off in this kernel or namespace: nothing to silence


def macs_for(conn_id: str) -> tuple[str, str]:
    """The (client, endpoint) MAC addresses of an ETHERNET vWire: locally administered,
    unicast, derived from the connection so a refresh or restart keeps them."""
    import hashlib

    out = []
    for side in ("client", "endpoint"):
        digest = hashlib.sha256(f"{conn_id}/{side}".encode()).digest()
        out.append(":".join(f"{b:02x}" for b in (0x02, *digest[:5])))
    return out[0], out[1]
