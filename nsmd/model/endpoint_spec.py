"""The `nsmd:` block of an endpoint manifest: what NSM leaves to Kubernetes pods.

Where the endpoint's interfaces go, how they are named and addressed, and which service
functions run on its vWires.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from typing import Any

from nsmd.errors import ValidationError
from nsmd.model.codec import field
from nsmd.model.registry import check_name

DEFAULT_PREFIX = "169.254.0.0/16"  # NSM's icmp-responder default (NSM_CIDR_PREFIX)
DEFAULT_ENDPOINT_IFNAME = "nsm0"
IFNAME_MAX = 15  # IFNAMSIZ - 1
_NETNS_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]+(%d)?[A-Za-z0-9_.-]*$")


def check_netns(value: str, where: str) -> None:
    """A name under /var/run/netns, or an absolute path (e.g. /proc/PID/ns/net)."""
    if value and not (value.startswith("/") or _NETNS_NAME.match(value)):
        raise ValidationError(where, "a network namespace name (letters, digits, '_', '.', '-') "
                                     "or an absolute path like /proc/PID/ns/net", value)
    if value in (".", ".."):
        raise ValidationError(where, "a network namespace name", value)


def check_ifname(value: str, where: str) -> None:
    if not value or len(value.replace("%d", "0")) > IFNAME_MAX or not _IFNAME.match(value):
        raise ValidationError(where, f"an interface name of 1-{IFNAME_MAX} letters, digits, "
                                     "'_', '.' or '-' (optionally one %d)", value)


def name_pattern(ifname: str) -> str:
    """The kernel name pattern for an endpoint's vWires: nsm0 -> nsm%d (nsm0, nsm1, ...)."""
    if "%d" in ifname:
        return ifname
    return ifname.rstrip("0123456789") + "%d"


def check_prefix(value: str, where: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as err:
        raise ValidationError(where, "a network prefix like 169.254.0.0/16", value,
                              detail=f"{where}: expected a network prefix like 169.254.0.0/16, "
                                     f"got {value!r} ({err})") from None
    if net.num_addresses < 2:
        raise ValidationError(where, "a prefix with room for at least one address pair", value)
    return net


@dataclasses.dataclass
class IpamSpec:
    prefix: str = DEFAULT_PREFIX
    exclude_prefixes: list[str] = field(default_factory=list)


@dataclasses.dataclass
class FunctionSpec:
    name: str = ""
    config: dict[str, Any] = field(default_factory=dict)


@dataclasses.dataclass
class NextSpec:
    service: str = ""
    labels: dict[str, str] = field(default_factory=dict)


@dataclasses.dataclass
class SupplierSpec:
    labels: dict[str, str] = field(default_factory=dict)   # of the endpoints it supplies
    ipam: IpamSpec = field(default_factory=IpamSpec)
    idle_s: float = 60.0                                    # retire this long after idle


@dataclasses.dataclass
class Vl3Spec:
    """This endpoint is one of a vL3 service's: it takes a subnet of `prefix` that no other
    endpoint of the service holds, addresses its clients from it and routes the rest of
    the prefix to the other endpoints."""
    prefix: str = ""
    subnet_prefix_len: int = 24

    def validate(self, where: str) -> None:
        net = check_prefix(self.prefix, f"{where}prefix")
        longest = net.max_prefixlen - 2  # room for the router and one client
        if not net.prefixlen < self.subnet_prefix_len <= longest:
            raise ValidationError(f"{where}subnet_prefix_len", f"a length between "
                                  f"{net.prefixlen + 1} and {longest} (inside {self.prefix})",
                                  self.subnet_prefix_len)


@dataclasses.dataclass
class EndpointSpec:
    netns: str = ""          # "" = the daemon's own network namespace
    ifname: str = DEFAULT_ENDPOINT_IFNAME
    mtu: int = 0             # 0 = the daemon's default for the mechanism
    ipam: IpamSpec = field(default_factory=IpamSpec)
    functions: list[FunctionSpec] = field(default_factory=list)
    next: NextSpec | None = None
    supplier: SupplierSpec | None = None
    vl3: Vl3Spec | None = None

    def validate(self, where: str = "nsmd.") -> EndpointSpec:
        check_netns(self.netns, f"{where}netns")
        check_ifname(self.ifname, f"{where}ifname")
        if self.mtu and not 576 <= self.mtu <= 65535:
            raise ValidationError(f"{where}mtu", "an MTU between 576 and 65535", self.mtu)
        check_prefix(self.ipam.prefix, f"{where}ipam.prefix")
        for i, prefix in enumerate(self.ipam.exclude_prefixes):
            check_prefix(prefix, f"{where}ipam.exclude_prefixes[{i}]")
        if self.next is not None and self.next.service:
            check_name(self.next.service, f"{where}next.service")
        if self.supplier is not None:
            if self.next is not None:
                raise ValidationError(f"{where}supplier", "a supplier or a passthrough (next), "
                                      "not both")
            check_prefix(self.supplier.ipam.prefix, f"{where}supplier.ipam.prefix")
            if not 1 <= self.supplier.idle_s <= 86400:
                raise ValidationError(f"{where}supplier.idle_s", "1 to 86400 seconds",
                                      self.supplier.idle_s)
        if self.vl3 is not None:
            if self.next is not None or self.supplier is not None:
                raise ValidationError(f"{where}vl3", "a vL3 endpoint, or a passthrough (next) "
                                      "or supplier, not both")
            self.vl3.validate(f"{where}vl3.")
        return self

    @property
    def builds_no_device(self) -> bool:
        """A passthrough or a supplier: the request goes on to another endpoint."""
        return self.next is not None or self.supplier is not None
