"""Connections (vWires), their path, mechanism and context; Request and Monitor events.

Field names are NSM's (api: pkg/api/networkservice/*.proto).
"""

from __future__ import annotations

import dataclasses
import enum

from nsmd.model.codec import copy_model, field


class State(enum.StrEnum):
    UP = "UP"
    DOWN = "DOWN"
    REFRESH_REQUESTED = "REFRESH_REQUESTED"
    RESELECT_REQUESTED = "RESELECT_REQUESTED"


STATES = tuple(s.value for s in State)
MECHANISM_CLASSES = ("LOCAL", "REMOTE")
EVENT_TYPES = ("INITIAL_STATE_TRANSFER", "UPDATE", "DELETE")


@dataclasses.dataclass(slots=True)
class PathSegment:
    name: str = ""
    id: str = ""
    token: str = ""
    expires: float = field(default=0.0, time=True)
    metrics: dict[str, str] = field(default_factory=dict)


@dataclasses.dataclass(slots=True)
class Path:
    index: int = 0
    path_segments: list[PathSegment] = field(default_factory=list)

    def current(self) -> PathSegment | None:
        segs = self.path_segments
        return segs[self.index] if self.index < len(segs) else None

    def previous(self) -> PathSegment | None:
        return self.path_segments[self.index - 1] if 0 < self.index <= len(
            self.path_segments) else None


@dataclasses.dataclass(slots=True)
class Mechanism:
    cls: str = field(default="LOCAL", choices=MECHANISM_CLASSES)
    type: str = ""
    parameters: dict[str, str] = field(default_factory=dict)


@dataclasses.dataclass(slots=True)
class Route:
    prefix: str = ""
    next_hop: str = field(default="", wire="nextHop")


@dataclasses.dataclass(slots=True)
class IPContext:
    src_ip_addrs: list[str] = field(default_factory=list)
    dst_ip_addrs: list[str] = field(default_factory=list)
    src_ip_required: bool = False
    dst_ip_required: bool = False
    src_routes: list[Route] = field(default_factory=list)
    dst_routes: list[Route] = field(default_factory=list)
    excluded_prefixes: list[str] = field(default_factory=list)


@dataclasses.dataclass(slots=True)
class DNSConfig:
    dns_server_ips: list[str] = field(default_factory=list)
    search_domains: list[str] = field(default_factory=list)


@dataclasses.dataclass(slots=True)
class DNSContext:
    configs: list[DNSConfig] = field(default_factory=list)


@dataclasses.dataclass(slots=True)
class EthernetContext:
    src_mac: str = ""           # the client's side of an ETHERNET vWire
    dst_mac: str = ""           # the endpoint's side
    vlan_tag: int = 0


@dataclasses.dataclass(slots=True)
class ConnectionContext:
    ip_context: IPContext = field(default_factory=IPContext)
    dns_context: DNSContext = field(default_factory=DNSContext)
    ethernet_context: EthernetContext = field(default_factory=EthernetContext)
    extra_context: dict[str, str] = field(default_factory=dict)
    mtu: int = field(default=0, wire="MTU")


@dataclasses.dataclass(slots=True)
class Connection:
    id: str = ""
    network_service: str = ""
    mechanism: Mechanism | None = None
    context: ConnectionContext = field(default_factory=ConnectionContext)
    labels: dict[str, str] = field(default_factory=dict)
    path: Path = field(default_factory=Path)
    network_service_endpoint_name: str = ""
    payload: str = ""
    state: str = field(default="UP", choices=STATES)

    def clone(self) -> Connection:
        return copy_model(self)

    def vwire_id(self) -> str:
        """The id that names this vWire on every hop: its client's (the first segment's),
        which the client was given; each hop's conn.id is its own segment's."""
        return self.path.path_segments[0].id if self.path.path_segments else self.id


@dataclasses.dataclass(slots=True)
class NetworkServiceRequest:
    connection: Connection = field(default_factory=Connection)
    mechanism_preferences: list[Mechanism] = field(default_factory=list)

    def clone(self) -> NetworkServiceRequest:
        return copy_model(self)


@dataclasses.dataclass(slots=True)
class ConnectionEvent:
    type: str = field(default="UPDATE", choices=EVENT_TYPES)
    connections: dict[str, Connection] = field(default_factory=dict)
