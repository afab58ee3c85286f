"""The OpenAPI 3.1 description of /v1/, served at /v1/openapi.json."""

from __future__ import annotations

from nsmd import __version__

_ERROR = {"description": "Bad input or failure", "content": {"application/json": {"schema": {
    "$ref": "#/components/schemas/Error"}}}}


def _op(summary: str, ok: str = "OK", params: tuple = (), body: str | None = None,
        stream: bool = False) -> dict:
    content: dict = {"application/x-ndjson": {}} if stream else {"application/json": {}}
    op: dict = {"summary": summary,
                "responses": {"200": {"description": ok, "content": content},
                              "4XX": _ERROR, "5XX": _ERROR}}
    if params:
        op["parameters"] = [{"name": n, "in": where, "required": where == "path",
                             "schema": {"type": "string"}} for n, where in params]
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": {
            "$ref": f"#/components/schemas/{body}"}}, "application/msgpack": {}}}
    return op


def openapi_document() -> dict:
    watch = (("watch", "query"),)
    return {
        "openapi": "3.1.0",
        "info": {"title": "nsmd API", "version": __version__},
        "paths": {
            "/healthz": {"get": _op("Liveness of the daemon and its packet engine")},
            "/metrics": {"get": _op("Prometheus metrics")},
            "/v1/status": {"get": _op("Daemon summary")},
            "/v1/openapi.json": {"get": _op("This document")},
            "/v1/apply": {"post": _op("Register the resources of NSM manifests (all or none); "
                                      "dry_run=true checks them and changes nothing",
                                      params=(("dry_run", "query"),), body="Apply")},
            "/v1/services": {
                "get": _op("Find network services; watch=true streams changes",
                           params=(("name", "query"), ("payload", "query")) + watch),
                "post": _op("Register a network service", body="Object")},
            "/v1/services/{name}": {
                "get": _op("One network service", params=(("name", "path"),)),
                "delete": _op("Unregister a network service", params=(("name", "path"),))},
            "/v1/endpoints": {
                "get": _op("Find endpoints; watch=true streams changes",
                           params=(("name", "query"), ("service", "query"),
                                   ("url", "query")) + watch),
                "post": _op("Register an endpoint record", body="Object")},
            "/v1/endpoints/{name}": {
                "get": _op("One endpoint", params=(("name", "path"),)),
                "delete": _op("Unregister an endpoint (closing its vWires if hosted here)",
                              params=(("name", "path"),))},
            "/v1/connections": {
                "get": _op("vWires served by this daemon", params=(("service", "query"),)),
                "post": _op("Request a vWire for a local client", body="Connect")},
            "/v1/connections/{id}": {
                "get": _op("One vWire", params=(("id", "path"),)),
                "delete": _op("Close a vWire", params=(("id", "path"),))},
            "/v1/peers": {"get": _op("Per peer daemon: tunnel address, wires, bytes and "
                                     "packets each way, time since last heard")},
            "/v1/monitor": {"get": _op(
                "Connection events: INITIAL_STATE_TRANSFER, then UPDATE / DELETE",
                params=(("connection", "query"), ("service", "query")), stream=True)},
        },
        "components": {"schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {
                "error": {"type": "string"},
                "field": {"type": "string", "description": "the bad input field (400)"},
                "policy": {"type": "string", "description": "the policy that denied the "
                           "call (403), see docs/security.md"}}},
            "Object": {"type": "object"},
            "Apply": {"type": "object", "required": ["documents"], "properties": {
                "documents": {"type": "array", "items": {"type": "object"}}}},
            "Connect": {"type": "object", "required": ["network_service"], "properties": {
                "network_service": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "netns": {"type": "string"}, "ifname": {"type": "string"},
                "client": {"type": "string"}}},
        }},
    }
