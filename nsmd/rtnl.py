"""The few route-netlink requests a vWire's device needs, sent on a plain socket.

pyroute2 encodes the messages (its ifinfmsg/ifaddrmsg/rtmsg classes); this module only
sends them, all of one device's in one datagram, and reads the kernel's acks. pyroute2
0.9's IPRoute runs an asyncio loop for every call (~0.4 ms a request, three requests a
device) and keeps ~100 KiB of per-thread state, on every namespace's worker thread.

A socket belongs to the namespace of the thread that opened it: each namespace worker
(netns.py) opens its own, once, and closes it when it stops.

Routes are added exclusively: a vWire never takes a prefix another device routes (a
peer claiming a victim's /32 must not divert it). Configuring a device again first
deletes the routes it holds itself (a delete names the device, so it cannot touch
another's), then adds them again with NLM_F_EXCL.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
import threading
from collections.abc import Sequence
from typing import Any

from pyroute2.netlink import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    NLMSG_ERROR,
)
from pyroute2.netlink.rtnl import RTM_DELROUTE, RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import IFF_UP, ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

_HEADER = struct.Struct("=IHHII")       # nlmsghdr: length, type, flags, sequence, port
_ERRNO = struct.Struct("=i")            # nlmsgerr's error, right after the header
_REPLACE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
_EXCLUSIVE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
_DELETE = NLM_F_REQUEST | NLM_F_ACK
# As `ip route add DST dev IF`: main table, unicast, scope global, protocol static.
_RT_TABLE_MAIN, _RTPROT_STATIC, _RT_SCOPE_UNIVERSE, _RTN_UNICAST = 254, 4, 0, 1
TIMEOUT_S = 5.0


class Rtnl:
    """A route-netlink socket in the calling thread's namespace."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                   socket.NETLINK_ROUTE)
        self._sock.settimeout(TIMEOUT_S)  # the kernel answers at once; never hang a worker
        self._sock.bind((0, 0))
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def configure(self, index: int, mtu: int = 0, addresses: Sequence[str] = (),
                  routes: Sequence[str] = (), mac: str = "") -> None:
        """Sets the device up (with `mtu` and `mac` if given), replaces its addresses
        (CIDR: a host address with its prefix length) and routes `routes` (prefixes)
        through it, each only if no other device routes it (EEXIST otherwise). Raises
        OSError with the kernel's errno if any of them fails."""
        link = ifinfmsg()
        link["index"], link["flags"], link["change"] = index, IFF_UP, IFF_UP
        link["attrs"] = ([["IFLA_MTU", mtu]] if mtu else []) + \
            ([["IFLA_ADDRESS", mac]] if mac else [])
        messages: list[tuple[Any, int, int, tuple[int, ...]]] = [
            (link, RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, ())]
        for cidr in addresses:
            iface = ipaddress.ip_interface(cidr)
            addr = ifaddrmsg()
            addr["family"] = _family(iface.version)
            addr["prefixlen"], addr["index"] = iface.network.prefixlen, index
            addr["attrs"] = [["IFA_LOCAL", str(iface.ip)], ["IFA_ADDRESS", str(iface.ip)]]
            messages.append((addr, RTM_NEWADDR, _REPLACE, ()))
        for prefix in routes:
            # this device's own route to it, if any (ESRCH: none), then ours alone
            messages.append((_route(prefix, index), RTM_DELROUTE, _DELETE, (errno.ESRCH,)))
            messages.append((_route(prefix, index), RTM_NEWROUTE, _EXCLUSIVE, ()))
        self._transact(messages)

    def _transact(self, messages: list) -> None:
        """Sends the messages (message, type, flags, errnos that are no failure) in one
        datagram (the kernel runs them in order) and waits for an ack of each; the first
        error found is raised."""
        datagram = bytearray()
        pending: dict[int, tuple[int, ...]] = {}
        for msg, kind, flags, tolerated in messages:
            self._seq = self._seq % 0xFFFFFFFF + 1
            msg["header"]["type"], msg["header"]["flags"] = kind, flags
            msg["header"]["sequence_number"] = self._seq
            msg.encode()
            datagram += msg.data
            pending[self._seq] = tolerated
        self._sock.send(datagram)
        failure = 0
        while pending:
            data = self._sock.recv(65536)
            offset = 0
            while offset + _HEADER.size <= len(data):
                length, kind, _, seq, _ = _HEADER.unpack_from(data, offset)
                if kind == NLMSG_ERROR and seq in pending:
                    code = -_ERRNO.unpack_from(data, offset + _HEADER.size)[0]
                    if code not in pending.pop(seq):
                        failure = failure or code
                offset += max((length + 3) & ~3, _HEADER.size)
        if failure:
            raise OSError(failure, os.strerror(failure))


def _route(prefix: str, index: int) -> rtmsg:
    net = ipaddress.ip_network(prefix, strict=False)
    route = rtmsg()
    route["family"], route["dst_len"] = _family(net.version), net.prefixlen
    route["table"], route["proto"] = _RT_TABLE_MAIN, _RTPROT_STATIC
    route["scope"], route["type"] = _RT_SCOPE_UNIVERSE, _RTN_UNICAST
    route["attrs"] = [["RTA_DST", str(net.network_address)], ["RTA_OIF", index]]
    return route


def _family(version: int) -> int:
    return socket.AF_INET if version == 4 else socket.AF_INET6


_local = threading.local()


def thread_rtnl() -> Rtnl:
    """This thread's socket (in its namespace), opened on first use."""
    rtnl = getattr(_local, "rtnl", None)
    if rtnl is None:
        rtnl = _local.rtnl = Rtnl()
    return rtnl


def close_thread_rtnl() -> None:
    rtnl = getattr(_local, "rtnl", None)
    if rtnl is not None:
        rtnl.close()
        _local.rtnl = None
