"""Registry and manifest handlers: /v1/services, /v1/endpoints, /v1/apply."""

from __future__ import annotations

import asyncio

from aiohttp import web

from nsmd.api.codec import read_body, reply
from nsmd.api.keys import DAEMON
from nsmd.api.streams import stream_ndjson
from nsmd.caller import local_caller
from nsmd.errors import ValidationError
from nsmd.manifest import parse_documents
from nsmd.model import NetworkService, NetworkServiceEndpoint, from_wire, to_wire
from nsmd.registry import EndpointQuery, ServiceQuery

routes = web.RouteTableDef()
BIG_MANIFEST = 100  # documents; more are parsed in a worker thread


def flag(request: web.Request, name: str) -> bool:
    """A true/false query parameter (?watch=true, ?dry_run=1); absent is false."""
    value = request.query.get(name, "")
    if value not in ("", "0", "1", "true", "false"):
        raise ValidationError(name, "true or false", value)
    return value in ("1", "true")


def _event(event) -> dict:
    if event is SYNCED:
        return {"synced": True}
    return {"item": to_wire(event.item), "deleted": event.deleted}


SYNCED = object()


async def _with_sync_marker(watch):
    """The watch's events, with {"synced": true} after the snapshot, so a mirror knows
    when the snapshot is complete (an empty registry sends only the marker)."""
    for _ in range(watch.snapshot_size):
        yield await anext(watch)
    yield SYNCED
    async for event in watch:
        yield event


@routes.get("/v1/services")
async def find_services(request: web.Request) -> web.StreamResponse:
    daemon = request.app[DAEMON]
    query = ServiceQuery(name=request.query.get("name", ""),
                         payload=request.query.get("payload", ""))
    if flag(request, "watch"):
        watch = daemon.registry.watch_services(query)
        try:
            return await stream_ndjson(request, _with_sync_marker(watch), _event,
                                       daemon.stopping)
        finally:
            watch.close()
    return reply(request, [to_wire(ns) for ns in daemon.registry.find_services(query)])


@routes.post("/v1/services")
async def register_service(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    ns = from_wire(NetworkService, await read_body(request))
    daemon.manager.policy.check("register", ns.name, local_caller(request.transport))
    return reply(request, to_wire(await daemon.registry.register_service(ns)))


@routes.get("/v1/services/{name}")
async def get_service(request: web.Request) -> web.Response:
    manifests = request.app[DAEMON].manager.manifests
    return reply(request, to_wire(manifests.service(request.match_info["name"])))


@routes.delete("/v1/services/{name}")
async def delete_service(request: web.Request) -> web.Response:
    daemon, name = request.app[DAEMON], request.match_info["name"]
    daemon.manager.policy.check("register", name, local_caller(request.transport))
    ns = await daemon.registry.unregister_service(name)
    return reply(request, to_wire(ns))


@routes.get("/v1/endpoints")
async def find_endpoints(request: web.Request) -> web.StreamResponse:
    daemon = request.app[DAEMON]
    query = EndpointQuery(name=request.query.get("name", ""),
                          network_service_names=tuple(request.query.getall("service", [])),
                          url=request.query.get("url", ""))
    if flag(request, "watch"):
        watch = daemon.registry.watch_endpoints(query)
        try:
            return await stream_ndjson(request, _with_sync_marker(watch), _event,
                                       daemon.stopping)
        finally:
            watch.close()
    return reply(request, [to_wire(nse) for nse in daemon.registry.find_endpoints(query)])


@routes.post("/v1/endpoints")
async def register_endpoint(request: web.Request) -> web.Response:
    """Registers an endpoint record hosted elsewhere (what a peer daemon does)."""
    nse = from_wire(NetworkServiceEndpoint, await read_body(request))
    daemon = request.app[DAEMON]
    for service in nse.network_service_names:
        daemon.manager.policy.check("register", service, local_caller(request.transport))
    return reply(request, to_wire(await daemon.registry.register_endpoint(nse)))


@routes.get("/v1/endpoints/{name}")
async def get_endpoint(request: web.Request) -> web.Response:
    manifests = request.app[DAEMON].manager.manifests
    return reply(request, manifests.endpoint_view(request.match_info["name"]))


@routes.delete("/v1/endpoints/{name}")
async def delete_endpoint(request: web.Request) -> web.Response:
    nse = await request.app[DAEMON].manager.manifests.delete_endpoint(request.match_info["name"],
                                                     local_caller(request.transport))
    return reply(request, to_wire(nse))


@routes.post("/v1/apply")
async def apply(request: web.Request) -> web.Response:
    body = await read_body(request)
    docs = body.get("documents") if isinstance(body, dict) else None
    if not isinstance(docs, list) or not docs:
        raise ValidationError("documents", "a non-empty list of manifest documents", docs)
    # all validated before anything changes; a big manifest off the event loop
    resources = await asyncio.to_thread(parse_documents, docs) if len(docs) > BIG_MANIFEST \
        else parse_documents(docs)
    return reply(request, {"applied": await request.app[DAEMON].manager.manifests.apply(
        resources, local_caller(request.transport), dry_run=flag(request, "dry_run"))})
