"""Which subnet of a vL3 prefix each endpoint holds, agreed through the registry.

An endpoint's registration carries its subnet as the label `vl3Subnet` of the service.
The registry that owns the records (the one place every write goes through) refuses a
registration whose subnet overlaps another endpoint's of the same service, so two
endpoints that pick the same free subnet at once cannot both get it: the second is told
(409) and takes the next one. A claim counts only under a service the endpoint lists
(the registry refuses one anywhere else), so labels of a decoy cannot claim a subnet.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Iterator

from nsmd.errors import Conflict, ValidationError
from nsmd.model import NetworkServiceEndpoint

SUBNET_LABEL = "vl3Subnet"
PEER_LABEL = "vl3Peer"  # on a mesh vWire's request: the endpoint that asks (its name)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def subnet_of(nse: NetworkServiceEndpoint, service: str) -> str:
    """The subnet `nse` claims for `service`, if it offers that service."""
    if service not in nse.network_service_names:
        return ""
    return nse.labels_for(service).get(SUBNET_LABEL, "")


def check_claims(nse: NetworkServiceEndpoint,
                 endpoints_of: Callable[[str], Iterable[NetworkServiceEndpoint]]) -> None:
    """What a registry checks of a registration's subnet claims: each under a service the
    endpoint lists, an IP prefix, and overlapping no other endpoint's of that service."""
    for service, entry in nse.network_service_labels.items():
        claim = entry.labels.get(SUBNET_LABEL, "") if entry else ""
        if not claim:
            continue
        where = f"network_service_labels.{service}.labels.{SUBNET_LABEL}"
        if service not in nse.network_service_names:
            raise ValidationError(where, "a vL3 subnet only under a service the endpoint "
                                  "lists in network_service_names")
        try:
            ipaddress.ip_network(claim, strict=True)
        except ValueError:
            raise ValidationError(where, "an IP prefix (e.g. 172.16.1.0/24)", claim) from None
        check_unique(nse, endpoints_of(service), service)


def check_unique(nse: NetworkServiceEndpoint, others: Iterable[NetworkServiceEndpoint],
                 service: str) -> None:
    """Raises Conflict if `nse` claims a subnet of `service` that overlaps another's."""
    mine = subnet_of(nse, service)
    if not mine:
        return
    net = _network(mine)
    for other in others:
        theirs = subnet_of(other, service)
        if other.name != nse.name and theirs and _network(theirs).overlaps(net):
            raise Conflict(f"vL3 subnet {mine} of network service {service!r} overlaps "
                           f"{theirs} held by endpoint {other.name!r}")


def candidates(prefix: str, length: int, taken: Iterable[str], preferred: str = "",
               ) -> Iterator[str]:
    """Free subnets of `prefix` to try in order: `preferred` first (the one held before a
    restart), then the others from the bottom of the prefix."""
    busy = [_network(t) for t in taken]
    if preferred and not any(_network(preferred).overlaps(b) for b in busy):
        yield preferred
    for subnet in ipaddress.ip_network(prefix).subnets(new_prefix=length):
        if str(subnet) != preferred and not any(subnet.overlaps(b) for b in busy):
            yield str(subnet)


def fits(subnet: str, prefix: str, length: int) -> bool:
    """Whether `subnet` is a /`length` subnet of `prefix` (a held one still fits the spec)."""
    if not subnet:
        return False
    net = _network(subnet)
    return net.prefixlen == length and net.subnet_of(_network(prefix))  # type: ignore[arg-type]


def overlaps(a: str, b: str) -> bool:
    return _network(a).overlaps(_network(b))  # type: ignore[arg-type]


def length(subnet: str) -> int:
    return _network(subnet).prefixlen


def router_address(subnet: str) -> str:
    """The endpoint's own address in its subnet (its clients' next hop and resolver)."""
    return str(_network(subnet).network_address + 1)


def _network(prefix: str) -> Network:
    return ipaddress.ip_network(prefix, strict=False)
