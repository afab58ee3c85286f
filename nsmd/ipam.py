"""Address pools for point-to-point vWires: /32 (or /128) pairs out of an endpoint's prefix.

Pure bookkeeping, no I/O: the ipam element persists who owns what. Excluded prefixes come
from peers: they are clipped to the pool and merged into sorted ranges that allocation
jumps over, so its work is bounded by the addresses in use and the number of exclusions,
never by the size of what they cover (`::/0` against a /64 pool is one jump).
"""

from __future__ import annotations

import bisect
import ipaddress
import socket
from collections.abc import Iterable

from nsmd.errors import SelectionError, ValidationError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# A request's excluded prefixes (a client's other vWires' addresses, an endpoint's own
# list): far more than any namespace holds, few enough to parse in milliseconds.
MAX_EXCLUDED_PREFIXES = 16384


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
        return (ip.version == self.network.version and self.contains(address)
                and int(ip) not in self._used and ip not in _Avoid(excluded))

    def reserve(self, address: str) -> None:
        self._used.add(int(ipaddress.ip_address(address)))

    def release(self, address: str) -> None:
        self._used.discard(int(ipaddress.ip_address(address)))

    def allocate(self, excluded: Iterable[str] = ()) -> str:
        """The next free address after the last one handed out, skipping excluded prefixes."""
        return self._allocate(_Avoid(excluded))

    def _allocate(self, avoid: _Avoid) -> str:
        starts, ends = avoid.ranges_within(self.network.version, self._first, self._last)
        # Next fit from the cursor, once round the pool: each step skips one address in use
        # or jumps one excluded range (a range may straddle the cursor: twice).
        value, wrapped = self._cursor, False
        for _ in range(len(self._used) + 2 * len(starts) + 2):
            if value > self._last:
                if wrapped:
                    break
                value, wrapped = self._first, True
            if wrapped and value >= self._cursor:
                break
            i = bisect.bisect_right(starts, value) - 1
            if i >= 0 and value <= ends[i]:
                value = ends[i] + 1
            elif value in self._used:
                value += 1
            else:
                self._used.add(value)
                self._cursor = value + 1 if value < self._last else self._first
                return str(ipaddress.ip_address(value) if self.network.version == 4
                           else ipaddress.IPv6Address(value))
        raise SelectionError(f"address pool {self.network} is exhausted")

    def allocate_pair(self, excluded: Iterable[str] = ()) -> tuple[str, str]:
        """(endpoint address, client address), like NSM's point2pointipam (dst, then src)."""
        avoid = _Avoid(excluded)  # parsed once for both: a client's many vWires are many
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
        self._clipped: dict[tuple[int, int, int], tuple[list[int], list[int]]] = {}
        for count, prefix in enumerate(prefixes, 1):
            if count > MAX_EXCLUDED_PREFIXES:
                raise ValidationError("excluded_prefixes", f"at most {MAX_EXCLUDED_PREFIXES} "
                                      "prefixes")
            host, _, length = prefix.partition("/")
            v6 = ":" in host
            if not length or length == ("128" if v6 else "32"):
                try:  # a single host: parsed by inet_pton (ipaddress's parser is ~10x slower)
                    packed = socket.inet_pton(socket.AF_INET6 if v6 else socket.AF_INET, host)
                except OSError:
                    raise ValidationError("excluded_prefixes", "IP prefixes",
                                          prefix) from None
                self.hosts.add((6 if v6 else 4, int.from_bytes(packed, "big")))
                continue
            try:
                net = ipaddress.ip_network(prefix, strict=False)
            except ValueError:
                raise ValidationError("excluded_prefixes", "IP prefixes", prefix) from None
            if net.num_addresses == 1:
                self.hosts.add((net.version, int(net.network_address)))
            else:
                self.ranges.append(net)

    def __contains__(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return (ip.version, int(ip)) in self.hosts or any(
            ip.version == net.version and ip in net for net in self.ranges)

    def ranges_within(self, version: int, first: int, last: int) -> tuple[list[int], list[int]]:
        """The exclusions of one family clipped to [first, last] and merged: sorted starts
        and their ends (made once per pool and request)."""
        key = (version, first, last)
        if key not in self._clipped:
            self._clipped[key] = self._merge(version, first, last)
        return self._clipped[key]

    def _merge(self, version: int, first: int, last: int) -> tuple[list[int], list[int]]:
        spans = sorted([(v, v) for fam, v in self.hosts if fam == version and first <= v <= last]
                       + [(max(int(n.network_address), first), min(int(n.broadcast_address), last))
                          for n in self.ranges if n.version == version
                          and int(n.network_address) <= last and int(n.broadcast_address) >= first])
        starts: list[int] = []
        ends: list[int] = []
        for lo, hi in spans:
            if ends and lo <= ends[-1] + 1:
                ends[-1] = max(ends[-1], hi)
            else:
                starts.append(lo)
                ends.append(hi)
        return starts, ends
