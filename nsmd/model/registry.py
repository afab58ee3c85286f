"""Registry records: NetworkService (with its matches) and NetworkServiceEndpoint.

Field names are NSM's (api: pkg/api/registry/registry.proto).
"""

from __future__ import annotations

import dataclasses
import re

from nsmd.errors import ValidationError
from nsmd.model.codec import field

PAYLOADS = ("IP", "ETHERNET")
# DNS-1123-ish names, optionally `@domain` for interdomain names (NSM's interdomain form).
NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?(@[A-Za-z0-9.:_-]+)?$")


def check_name(name: str, where: str) -> None:
    if not name:
        raise ValidationError(where, "a non-empty name")
    if not NAME_RE.match(name):
        raise ValidationError(where, "letters, digits, '.', '_' or '-' (at most 253), "
                                     "optionally followed by @domain", name)


@dataclasses.dataclass(slots=True)
class Destination:
    destination_selector: dict[str, str] = field(default_factory=dict)
    weight: int = 0  # NSM carries it but never uses it; kept for round-trips


@dataclasses.dataclass(slots=True)
class MatchMetadata:
    labels: dict[str, str] = field(default_factory=dict)


@dataclasses.dataclass(slots=True)
class Match:
    source_selector: dict[str, str] = field(default_factory=dict)
    routes: list[Destination] = field(default_factory=list)
    fallthrough: bool = False
    metadata: MatchMetadata | None = None


@dataclasses.dataclass(slots=True)
class NetworkService:
    name: str = ""
    payload: str = field(default="IP", choices=PAYLOADS)
    matches: list[Match] = field(default_factory=list)
    path_ids: list[str] = field(default_factory=list)

    def validate(self, where: str = "") -> NetworkService:
        check_name(self.name, f"{where}name" if where else "name")
        return self


@dataclasses.dataclass(slots=True)
class ServiceLabels:
    labels: dict[str, str] = field(default_factory=dict)


@dataclasses.dataclass(slots=True)
class NetworkServiceEndpoint:
    name: str = ""
    network_service_names: list[str] = field(default_factory=list)
    network_service_labels: dict[str, ServiceLabels] = field(default_factory=dict)
    url: str = ""
    expiration_time: float = field(default=0.0, time=True)
    initial_registration_time: float = field(default=0.0, time=True)
    path_ids: list[str] = field(default_factory=list)

    def labels_for(self, service: str) -> dict[str, str]:
        entry = self.network_service_labels.get(service)
        return entry.labels if entry else {}

    def validate(self, where: str = "") -> NetworkServiceEndpoint:
        check_name(self.name, f"{where}name")
        if not self.network_service_names:
            raise ValidationError(f"{where}network_service_names", "at least one service name")
        for i, service in enumerate(self.network_service_names):
            check_name(service, f"{where}network_service_names[{i}]")
        return self
