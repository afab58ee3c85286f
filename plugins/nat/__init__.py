"""nat: source NAT (masquerade) of what the client side sends, towards the endpoint, to
one address, with connection tracking and timeouts (stage.pyx; IPv4 TCP, UDP and ICMP
echo).

    config: {address: 100.64.9.9, tcp_timeout_s: 300, udp_timeout_s: 60, icmp_timeout_s: 30}

`address` defaults to the vWire's client address, so hosts or networks behind a client
reach the endpoint through that one address (the endpoint routes only it back). Another
`address` must be routed back to the vWire by the endpoint's side.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

from nsmd.errors import NsmdError, ValidationError
from nsmd.model import Connection
from nsmd.plugins.api import Function, VWireFunction, check_seconds


@dataclasses.dataclass
class Config:
    address: str = ""
    tcp_timeout_s: float = 300.0
    udp_timeout_s: float = 60.0
    icmp_timeout_s: float = 30.0


class Nat(Function):
    name = "nat"
    Config = Config

    def check(self) -> None:
        cfg, at = self.config, f"{self.where}.config"
        if cfg.address:
            try:
                ipaddress.IPv4Address(cfg.address)
            except ValueError:
                raise ValidationError(f"{at}.address", "an IPv4 address", cfg.address) from None
        check_seconds(cfg, self.where, "tcp_timeout_s", "udp_timeout_s", "icmp_timeout_s")

    def attach(self, conn: Connection) -> VWireFunction:
        from nsmd.plugins.nat.stage import NatStage

        cfg = self.config
        address = cfg.address or _client_address(conn)
        return NatStage(ipaddress.IPv4Address(address).packed, cfg.tcp_timeout_s,
                        cfg.udp_timeout_s, cfg.icmp_timeout_s)

    def describe(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)


def _client_address(conn: Connection) -> str:
    for cidr in conn.context.ip_context.src_ip_addrs:
        address = ipaddress.ip_interface(cidr).ip
        if address.version == 4:
            return str(address)
    raise NsmdError(f"nat on vWire {conn.id}: the client has no IPv4 address to masquerade "
                    "behind (set config.address)")
