"""NSM's data model with NSM's field names, and its JSON/msgpack codecs."""

from nsmd.model.codec import from_wire, to_wire
from nsmd.model.connection import (
    Connection,
    ConnectionContext,
    ConnectionEvent,
    DNSConfig,
    DNSContext,
    EthernetContext,
    IPContext,
    Mechanism,
    NetworkServiceRequest,
    Path,
    PathSegment,
    Route,
    State,
)
from nsmd.model.registry import (
    Destination,
    Match,
    MatchMetadata,
    NetworkService,
    NetworkServiceEndpoint,
    ServiceLabels,
)

__all__ = [
    "Connection", "ConnectionContext", "ConnectionEvent", "DNSConfig", "DNSContext", "Destination",
    "EthernetContext",
    "IPContext", "Match", "MatchMetadata", "Mechanism", "NetworkService", "NetworkServiceEndpoint",
    "NetworkServiceRequest", "Path", "PathSegment", "Route", "ServiceLabels", "State",
    "from_wire", "to_wire",
]
