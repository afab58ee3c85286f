"""The mechanisms nsmd offers, and the parameters a tunnel mechanism carries. Each
mechanism's endpoint side is a module of this package (kernel.py, nsmd_udp.py), listed in
wire.py's table by mechanism type: a new mechanism is one module and one line there.

KERNEL (class LOCAL): a TUN device in the client's namespace; parameters `netns`, `name`.
NSMD_UDP (class REMOTE): the encrypted UDP tunnel between two daemons, like NSM's
WIREGUARD mechanism: the client's daemon offers src_ip/src_port, its ephemeral X25519
`src_public_key` and the receiver index it will accept (`src_index`); the endpoint's
daemon answers with the dst_* counterparts (OFFER_KEYS, ANSWER_KEYS: tunnel_keys.py).
`key_context` binds the keys to the vWire.
"""

from __future__ import annotations

import ipaddress

from nsmd.caller import Caller
from nsmd.errors import ValidationError
from nsmd.model import Connection, Mechanism, NetworkServiceRequest
from nsmd.model.endpoint_spec import check_ifname, check_netns
from nsmd.tunnel_keys import decode_public

KERNEL = "KERNEL"
TUNNEL = "NSMD_UDP"
DEFAULT_CLIENT_IFNAME = "nsm%d"
ETH_HEADER_BYTES = 14


def ethernet(conn: Connection) -> bool:
    """An ETHERNET (L2) vWire: TAP devices at both ends, frames in the tunnel."""
    return conn.payload == "ETHERNET"


def find(request: NetworkServiceRequest, mech_type: str) -> Mechanism | None:
    """The mechanism of that type: the one already chosen, else the first preference."""
    conn = request.connection
    if conn.mechanism is not None and conn.mechanism.type == mech_type:
        return conn.mechanism
    return next((m for m in request.mechanism_preferences if m.type == mech_type), None)


def kernel_mechanism(request: NetworkServiceRequest) -> Mechanism:
    mech = find(request, KERNEL)
    if mech is None:
        offered = [m.type for m in request.mechanism_preferences] or ["none"]
        raise ValidationError("mechanism_preferences", "a KERNEL mechanism (netns, name)",
                              ", ".join(offered))
    return mech


def client_interface(request: NetworkServiceRequest) -> tuple[str, str]:
    """(namespace, requested interface name or "") of the client's KERNEL mechanism."""
    params = kernel_mechanism(request).parameters
    netns, name = params.get("netns", ""), params.get("name", "")
    check_netns(netns, "mechanism.parameters.netns")
    if name:
        check_ifname(name, "mechanism.parameters.name")
    return netns, name


def aim_at_caller(offer: dict[str, str], caller: Caller) -> dict[str, str]:
    """A peer's tunnel offer, pointed at the address its TLS connection came from whatever
    it says: behind a NAT a client offers its private address, and nobody may point a
    tunnel at a third party. The port is the offer's; the first authenticated datagram
    from the client moves the tunnel to where the NAT really maps it (roaming, engine)."""
    offer["src_ip"] = caller.address
    return offer


def check_tunnel_params(params: dict[str, str], keys: tuple[str, ...],
                        where: str = "mechanism.parameters") -> dict[str, str]:
    """Validates the offer or answer part of NSMD_UDP parameters; returns them."""
    for key in keys:
        if key not in params:
            raise ValidationError(f"{where}.{key}", "present in an NSMD_UDP mechanism")
        value = params[key]
        if key.endswith("_ip"):
            try:
                ipaddress.IPv4Address(value)
            except ValueError:
                raise ValidationError(f"{where}.{key}", "an IPv4 address", value) from None
        elif key.endswith("_port") or key.endswith("_index"):
            limit = 65536 if key.endswith("_port") else 2**32
            if not value.isdigit() or not 0 < int(value) < limit:
                raise ValidationError(f"{where}.{key}", f"an integer in 1..{limit - 1}", value)
        elif key.endswith("_public_key"):
            decode_public(value, f"{where}.{key}")
        elif not value:
            raise ValidationError(f"{where}.{key}", "a non-empty string")
    return params
