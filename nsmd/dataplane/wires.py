"""What the data plane knows of each vWire on this host: its sides, lanes and devices."""

from __future__ import annotations

import dataclasses
import enum
import sys
import time
import types
from collections.abc import Mapping
from typing import Any

# A wire's tunnel parameters until it is keyed: one shared, read-only empty mapping
# (tunnel_keys replaces it whole), so an idle local vWire does not carry an empty dict.
NOTHING_AGREED: Mapping[str, str] = types.MappingProxyType({})


class WireKind(enum.StrEnum):
    """What a wire joins (kept as its value in the wire records)."""

    LOCAL = "local"     # two devices on this host (KERNEL)
    TUNNEL = "tunnel"   # one device and a tunnel (NSMD_UDP, either side)
    RELAY = "relay"     # two tunnels, no device (a composed chain's middle hop)


@dataclasses.dataclass(slots=True)
class Side:
    netns: str      # "" = the daemon's own namespace
    ifname: str     # the device's actual name
    addresses: list[str]

    def __post_init__(self) -> None:
        # one string per namespace and per device name (nsm0, nsm1, ... repeat in every
        # namespace), not one per side: a vWire's record is kept as long as it lives
        self.netns, self.ifname = sys.intern(self.netns), sys.intern(self.ifname)


@dataclasses.dataclass(slots=True)
class Lane:
    engine: int     # index of the engine (thread, tunnel socket)
    handle: int     # the engine's handle of this wire


@dataclasses.dataclass(slots=True)
class Wire:
    conn_id: str
    kind: WireKind
    client: Side | None             # the sides on this host; a tunnel wire has one
    endpoint: Side | None
    mtu: int
    peer: tuple[str, int] | None = None
    lanes: list[Lane] = dataclasses.field(default_factory=list)
    devices: list[list[int]] = dataclasses.field(default_factory=list)  # fds per device
    created: float = dataclasses.field(default_factory=time.monotonic)
    offload: bool = False           # vnet headers + TSO on the devices
    l2: bool = False                # ETHERNET: TAP devices, Ethernet frames
    keyed: bool = False             # keys installed by this run of the daemon
    agreed: Mapping[str, str] = dataclasses.field(default_factory=lambda: NOTHING_AGREED)
    stages: dict[int, list] | None = None  # path position -> parts (None: no functions)
    remote: tuple[str, str] | None = None  # the far daemon (URL, SPIFFE ID) we keyed towards
    side: int = 0                   # a relay half: 0 towards the client, 1 towards the endpoint
    partner: str = ""               # a relay half: the key of the other half
    # the peer daemon that asked for this (endpoint side) wire: its SPIFFE ID, URL and path
    # segment id, kept so that a restart which cannot take the wire back tells it at once
    owner: dict[str, str] | None = None
    vwire: str = ""                 # the vWire's id where it differs from conn_id (see name)
    route: Any = None               # how a tunnel crosses NATs (manager/paths.py); not kept

    @property
    def name(self) -> str:
        """The id that names this vWire in logs on every host: its client's connection id
        (the first path segment's), which `nsmd connect` printed; hops key wires by their
        own segment's id."""
        return self.vwire or self.conn_id

    @property
    def engine(self) -> int:
        return self.lanes[0].engine

    @property
    def handle(self) -> int:
        return self.lanes[0].handle

    @property
    def client_side(self) -> Side:
        assert self.client is not None, "not a wire with the client on this host"
        return self.client

    @property
    def endpoint_side(self) -> Side:
        assert self.endpoint is not None, "not a wire with the endpoint on this host"
        return self.endpoint

    @property
    def local_side(self) -> Side:
        side = self.client or self.endpoint
        assert side is not None
        return side

    def record(self) -> dict:
        """What is stored to re-attach its devices after a restart."""
        return {"kind": self.kind, "mtu": self.mtu, "peer": self.peer, "offload": self.offload,
                "queues": len(self.lanes) or 1, "tap": self.l2, "owner": self.owner,
                "vwire": self.vwire,
                "client": dataclasses.asdict(self.client) if self.client else None,
                "endpoint": dataclasses.asdict(self.endpoint) if self.endpoint else None}

    @classmethod
    def from_record(cls, conn_id: str, doc: dict) -> Wire:
        sides = [Side(**doc[k]) if doc.get(k) else None for k in ("client", "endpoint")]
        return cls(conn_id, WireKind(doc.get("kind", "local")), sides[0], sides[1], doc["mtu"],
                   peer=tuple(doc["peer"]) if doc.get("peer") else None,
                   offload=doc.get("offload", False), l2=doc.get("tap", False),
                   owner=doc.get("owner"), vwire=doc.get("vwire", ""))
