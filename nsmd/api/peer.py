"""What peer daemons may call on our mTLS listener (never the admin API of the unix socket).

Registry: Find and watch like the local API, and writes on behalf of the caller's SPIFFE
ID: a name belongs to whoever registered it first, and the --policy file says who may
register what. Manager: Request, Close and tunnel rekeys, each checked by the manager's
authorize element or, for rekeys, by the same owner and address rules.
"""

from __future__ import annotations

import contextlib

from aiohttp import web

from nsmd.api import registry as local_registry
from nsmd.api.codec import read_body, reply
from nsmd.api.keys import DAEMON
from nsmd.caller import Caller, peer_caller
from nsmd.errors import ValidationError
from nsmd.identity.svid import spiffe_id_of
from nsmd.identity.tls import peer_certificate
from nsmd.manager.rekey import answer_rekey
from nsmd.model import (
    Connection,
    NetworkService,
    NetworkServiceEndpoint,
    NetworkServiceRequest,
    from_wire,
    to_wire,
)
from nsmd.peer.client import URL_HEADER
from nsmd.tunnel_keys import TunnelKeying

routes = web.RouteTableDef()


def caller(request: web.Request) -> Caller:
    """The peer daemon, as its TLS connection proved it."""
    transport = request.transport
    cert = peer_certificate(transport.get_extra_info("ssl_object") if transport else None)
    peername = transport.get_extra_info("peername") if transport else None
    return peer_caller(cert, str(spiffe_id_of(cert)), peername[0] if peername else "",
                       request.headers.get(URL_HEADER, ""))


def _check_records(daemon, who: Caller) -> None:
    daemon.quotas.check("records-per-registrant", daemon.registry.records_of(who.spiffe_id),
                        who)


@routes.get("/v1/services")
async def find_services(request: web.Request) -> web.StreamResponse:
    with _watching(request):
        return await local_registry.find_services(request)


@routes.get("/v1/endpoints")
async def find_endpoints(request: web.Request) -> web.StreamResponse:
    with _watching(request):
        return await local_registry.find_endpoints(request)


def _watching(request: web.Request):
    """A peer's watch stream counts against its quota while it is open."""
    if not local_registry.flag(request, "watch"):
        return contextlib.nullcontext()
    return request.app[DAEMON].quotas.hold("watches-per-peer", caller(request).spiffe_id)


routes.get("/v1/services/{name}")(local_registry.get_service)
routes.get("/v1/endpoints/{name}")(local_registry.get_endpoint)


@routes.post("/v1/services")
async def register_service(request: web.Request) -> web.Response:
    ns = from_wire(NetworkService, await read_body(request))
    daemon, who = request.app[DAEMON], caller(request)
    daemon.manager.policy.check("register", ns.name, who)
    if ns.name not in daemon.registry.services:
        _check_records(daemon, who)
    return reply(request, to_wire(await daemon.registry.register_service(
        ns, owner=who.spiffe_id)))


@routes.delete("/v1/services/{name}")
async def unregister_service(request: web.Request) -> web.Response:
    ns = await request.app[DAEMON].registry.unregister_service(
        request.match_info["name"], owner=caller(request).spiffe_id)
    return reply(request, to_wire(ns))


@routes.post("/v1/endpoints")
async def register_endpoint(request: web.Request) -> web.Response:
    nse = from_wire(NetworkServiceEndpoint, await read_body(request))
    daemon, who = request.app[DAEMON], caller(request)
    for service in nse.network_service_names:
        daemon.manager.policy.check("register", service, who)
    if nse.name not in daemon.registry.endpoints:
        _check_records(daemon, who)
    return reply(request, to_wire(await daemon.registry.register_endpoint(
        nse, owner=who.spiffe_id)))


@routes.delete("/v1/endpoints/{name}")
async def unregister_endpoint(request: web.Request) -> web.Response:
    nse = await request.app[DAEMON].registry.unregister_endpoint(
        request.match_info["name"], owner=caller(request).spiffe_id)
    return reply(request, to_wire(nse))


@routes.post("/v1/peer/request")
async def peer_request(request: web.Request) -> web.Response:
    req = from_wire(NetworkServiceRequest, await read_body(request))
    conn = await request.app[DAEMON].manager.serve_peer(req, caller(request))
    return reply(request, to_wire(conn))


@routes.post("/v1/peer/close")
async def peer_close(request: web.Request) -> web.Response:
    conn = from_wire(Connection, await read_body(request))
    await request.app[DAEMON].manager.close_for_peer(conn, caller(request))
    return reply(request, {"closed": conn.id})


@routes.post("/v1/peer/dropped")
async def peer_dropped(request: web.Request) -> web.Response:
    conn = from_wire(Connection, await read_body(request))
    healed = await request.app[DAEMON].manager.peer_dropped(conn, caller(request))
    return reply(request, {"connection": healed})


@routes.post("/v1/peer/rekey")
async def peer_rekey(request: web.Request) -> web.Response:
    body = await read_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("connection_id"), str) \
            or not isinstance(body.get("offer"), dict):
        raise ValidationError("body", "{connection_id, offer}")
    daemon = request.app[DAEMON]
    return reply(request, answer_rekey(daemon.manager.server_begin, daemon.manager.own_id(),
                                       TunnelKeying(daemon.dataplane), daemon.metrics,
                                       caller(request), body["connection_id"], body["offer"]))


def build_peer_app(daemon) -> web.Application:
    from nsmd.api.codec import (
        audit_middleware,
        body_quota_middleware,
        errors_middleware,
        work_middleware,
    )

    app = web.Application(middlewares=[
        work_middleware(daemon.heap.touch), errors_middleware,
        audit_middleware(caller, lambda policy: daemon.metrics.denials.labels(policy).inc()),
        body_quota_middleware(daemon.quotas, caller)],
        client_max_size=daemon.quotas.limits.body_bytes)
    app[DAEMON] = daemon
    app.add_routes(routes)
    return app
