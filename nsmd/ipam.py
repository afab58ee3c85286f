"""Address pools for point-to-point vWires: /32 (or /128) pairs out of an endpoint's prefix.

Pure bookkeeping, no I/O: the ipam element persists who owns what.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

from nsmd.errors import SelectionError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Pool:
    def __init__(self, prefix: str):
        self.network: Network = ipaddress.ip_network(prefix)
        net = self.network
        first, last = int(net.network_address), int(net.broadcast_address)
        if net.version == 4 and net.prefixlen <= 30:
            first, last = first + 1, last - 1  # no network or broadcast address
        elif net.version == 6 and net.prefixlen <= 126:
            first += 1  # no subnet-router anycast address
        self._first, self._last = first, last
        self._used: set[int] = set()
        self._cursor = first

    def contains(self, address: str) -> bool:
        value = int(ipaddress.ip_address(address))
        return self._first <= value <= self._last

    def is_free(self, address: str, excluded: Iterable[str] = ()) -> bool:
        ip = ipaddress.ip_address(address)
        return (self.contains(address) and int(ip) not in self._used
                and not _excluded(ip, _networks(excluded)))

    def reserve(self, address: str) -> None:
        self._used.add(int(ipaddress.ip_address(address)))

    def release(self, address: str) -> None:
        self._used.discard(int(ipaddress.ip_address(address)))

    def allocate(self, excluded: Iterable[str] = ()) -> str:
        """The next free address after the last one handed out, skipping excluded prefixes."""
        return self._allocate(_networks(excluded))

    def _allocate(self, avoid: _Avoid) -> str:
        size = self._last - self._first + 1
        for step in range(size):
            value = self._first + (self._cursor - self._first + step) % size
            if value in self._used:
                continue
            ip = ipaddress.ip_address(value) if self.network.version == 4 else \
                ipaddress.IPv6Address(value)
            if _excluded(ip, avoid):
                continue
            self._used.add(value)
            self._cursor = value + 1 if value < self._last else self._first
            return str(ip)
        raise SelectionError(f"address pool {self.network} is exhausted")

    def allocate_pair(self, excluded: Iterable[str] = ()) -> tuple[str, str]:
        """(endpoint address, client address), like NSM's point2pointipam (dst, then src)."""
        avoid = _networks(excluded)  # parsed once for both: a client's many vWires are many
        dst = self._allocate(avoid)
        try:
            src = self._allocate(avoid)
        except SelectionError:
            self.release(dst)
            raise
        return dst, src


class _Avoid:
    """Excluded prefixes, parsed once per request: single hosts in a set, ranges in a list
    (a client with many vWires excludes many /32s; each check must stay O(1) for them)."""

    def __init__(self, prefixes: Iterable[str]):
        self.hosts: set[tuple[int, int]] = set()
        self.ranges: list[Network] = []
        for prefix in prefixes:
            host, _, length = prefix.partition("/")
            v6 = ":" in host
            if not length or length == ("128" if v6 else "32"):
                try:  # a single host: parsed by inet_pton (ipaddress's parser is ~10x slower)
                    packed = socket.inet_pton(socket.AF_INET6 if v6 else socket.AF_INET, host)
                except OSError:
                    raise ValueError(f"invalid address {host!r} in excluded prefix "
                                     f"{prefix!r}") from None
                self.hosts.add((6 if v6 else 4, int.from_bytes(packed, "big")))
                continue
            net = ipaddress.ip_network(prefix, strict=False)
            if net.num_addresses == 1:
                self.hosts.add((net.version, int(net.network_address)))
            else:
                self.ranges.append(net)

    def __contains__(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return (ip.version, int(ip)) in self.hosts or any(
            ip.version == net.version and ip in net for net in self.ranges)


def _networks(prefixes: Iterable[str]) -> _Avoid:
    return _Avoid(prefixes)


def _excluded(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, avoid: _Avoid) -> bool:
    return ip in avoid
