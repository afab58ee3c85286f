"""NSM manifests (networkservicemesh.io/v1 NetworkService / NetworkServiceEndpoint) -> model.

NSM's own YAML is read unchanged; Kubernetes metadata other than `name` is ignored. What NSM
leaves to pods lives in the endpoint's `spec.nsmd` block (nsmd.model.endpoint_spec).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import yaml

from nsmd.errors import ValidationError
from nsmd.model import NetworkService, NetworkServiceEndpoint, from_wire, to_wire
from nsmd.model.endpoint_spec import EndpointSpec
from nsmd.plugins.api import parse_functions

API_VERSION = "networkservicemesh.io/v1"
KINDS = ("NetworkService", "NetworkServiceEndpoint")


@dataclasses.dataclass
class Resource:
    kind: str
    name: str
    service: NetworkService | None = None
    endpoint: NetworkServiceEndpoint | None = None
    spec: EndpointSpec | None = None  # the nsmd block of an endpoint


def load_yaml_documents(text: str, source: str = "input") -> list[dict]:
    """Every non-empty document of a YAML stream; a syntax error names its line."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = " ".join(str(getattr(err, "problem", None) or err).split())  # one line
        raise ValidationError(where, "valid YAML",
                              detail=f"{where}: not valid YAML ({problem})") from None
    if not docs:
        raise ValidationError(source, "at least one manifest document",
                              detail=f"{source}: no manifest documents found")
    return docs


def parse_documents(docs: list[Any]) -> list[Resource]:
    """Validates every document first; raises on the first bad one (so nothing is applied)."""
    resources = [parse_document(doc, i) for i, doc in enumerate(docs)]
    seen: set[tuple[str, str]] = set()
    for res in resources:
        if (res.kind, res.name) in seen:
            raise ValidationError("metadata.name", f"one document per {res.kind} name",
                                  detail=f"{res.kind} {res.name!r} appears twice")
        seen.add((res.kind, res.name))
    return resources


def parse_document(doc: Any, index: int = 0) -> Resource:
    where = f"document {index + 1}"
    if not isinstance(doc, dict):
        raise ValidationError(where, "a mapping with apiVersion, kind, metadata, spec", doc)
    if doc.get("apiVersion") != API_VERSION:
        raise ValidationError(f"{where}: apiVersion", API_VERSION, doc.get("apiVersion"))
    kind = doc.get("kind")
    if kind not in KINDS:
        raise ValidationError(f"{where}: kind", " or ".join(KINDS), kind)
    metadata = doc.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if not isinstance(name, str) or not name:
        raise ValidationError(f"{where} ({kind}): metadata.name", "a non-empty string", name)
    where = f"{kind} {name!r}"
    spec = doc.get("spec") or {}
    if not isinstance(spec, dict):
        raise ValidationError(f"{where}: spec", "a mapping", spec)
    if kind == "NetworkService":
        ns = from_wire(NetworkService, {**spec, "name": name}, f"{where}: spec")
        return Resource(kind, name, service=ns.validate(f"{where}: metadata."))
    extra = spec.get("nsmd")
    nse = from_wire(NetworkServiceEndpoint,
                    {k: v for k, v in spec.items() if k != "nsmd"} | {"name": name},
                    f"{where}: spec")
    nse.validate(f"{where}: spec.")
    endpoint_spec = from_wire(EndpointSpec, extra, f"{where}: spec.nsmd")
    endpoint_spec.validate(f"{where}: spec.nsmd.")
    parse_functions(endpoint_spec.functions, f"{where}: spec.nsmd.")  # configs checked now
    return Resource(kind, name, endpoint=nse, spec=endpoint_spec)


def to_manifest(obj: NetworkService | NetworkServiceEndpoint,
                spec: EndpointSpec | None = None) -> dict:
    """The manifest form of a registry record (for `get -o yaml` round trips)."""
    body = to_wire(obj)
    name = body.pop("name")
    if spec is not None:
        body["nsmd"] = to_wire(spec)
    kind = "NetworkService" if isinstance(obj, NetworkService) else "NetworkServiceEndpoint"
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name}, "spec": body}
