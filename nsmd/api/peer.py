"""What peer daemons may call on our mTLS listener (never the admin API of the unix socket).

Registry: Find and watch like the local API, and writes on behalf of the caller's SPIFFE
ID: a name belongs to whoever registered it first, and the --policy file says who may
register what. Manager: Request, Close and tunnel rekeys, each checked by the manager's
authorize element or, for rekeys, by the same owner and address rules. The manager's
calls also arrive sealed through the rendezvous (serve_sealed), checked the same way for
the caller the envelope proves. Rendezvous: on the registry daemon, the channels daemons
behind NAT hold open, and the calls and replies it carries for them.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from aiohttp import web

from nsmd.api import registry as local_registry
from nsmd.api.codec import log_refusal, read_body, reply
from nsmd.api.keys import DAEMON
from nsmd.api.streams import stream_ndjson
from nsmd.caller import Caller, peer_caller
from nsmd.errors import NotFound, NsmdError, PermissionDenied, ValidationError
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
from nsmd.peer import rendezvous
from nsmd.peer.client import URL_HEADER
from nsmd.peer.envelope import Opened
from nsmd.quotas import QuotaExceeded
from nsmd.tunnel_keys import TunnelKeying

routes = web.RouteTableDef()
log = logging.getLogger("nsmd.api.peer")


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


# -- the manager's calls: over mTLS (routes) or sealed through the rendezvous -----------

async def op_request(daemon, body: Any, who: Caller) -> Any:
    req = from_wire(NetworkServiceRequest, body)
    return to_wire(await daemon.manager.serve_peer(req, who))


async def op_close(daemon, body: Any, who: Caller) -> Any:
    conn = from_wire(Connection, body)
    await daemon.manager.close_for_peer(conn, who)
    return {"closed": conn.id}


async def op_dropped(daemon, body: Any, who: Caller) -> Any:
    conn = from_wire(Connection, body)
    return {"connection": await daemon.manager.peer_dropped(conn, who)}


async def op_rekey(daemon, body: Any, who: Caller) -> Any:
    if not isinstance(body, dict) or not isinstance(body.get("connection_id"), str) \
            or not isinstance(body.get("offer"), dict):
        raise ValidationError("body", "{connection_id, offer}")
    return answer_rekey(daemon.manager.server_begin, daemon.manager.own_id(),
                        TunnelKeying(daemon.dataplane), daemon.metrics, who,
                        body["connection_id"], body["offer"])


async def op_relayed(daemon, body: Any, who: Caller) -> Any:
    return daemon.manager.paths.relayed(who, body)


OPS = {"/v1/peer/request": op_request, "/v1/peer/close": op_close,
       "/v1/peer/dropped": op_dropped, "/v1/peer/rekey": op_rekey,
       "/v1/peer/relayed": op_relayed}


def _route(path: str):
    async def handler(request: web.Request) -> web.Response:
        return reply(request, await OPS[path](request.app[DAEMON], await read_body(request),
                                              caller(request)))
    handler.__name__ = "peer_" + path.rsplit("/", 1)[1]
    return handler


for _path in OPS:
    routes.post(_path)(_route(_path))


async def serve_sealed(daemon, opened: Opened, from_addr: str) -> tuple[int, Any]:
    """A sealed call that came through the rendezvous: the operation it names, for the
    caller the envelope proves, at the address the rendezvous saw it at (HTTP status,
    payload). Refusals are audited as on the listener."""
    who = peer_caller(opened.certificate, opened.sender, from_addr,
                      str(opened.claims.get("url", "")), sealed=True)
    op = opened.claims.get("op")
    try:
        if op not in OPS:
            raise NotFound(f"no peer operation {op!r}")
        return 200, await OPS[op](daemon, opened.body(), who)
    except (PermissionDenied, QuotaExceeded) as err:
        log_refusal(err, str(who), f"sealed {op}", daemon.metrics)
        return err.status, err.to_json()
    except NsmdError as err:
        return err.status, err.to_json()
    except Exception as err:  # a bug: logged with its trace, answered in one line
        log.exception("sealed %s from %s crashed", op, who)
        return 500, {"error": f"internal error ({type(err).__name__}: {err})"}


# -- a relay (--relay): two ports per relayed vWire, over mTLS only ---------------------

def _relay(request: web.Request):
    relay = request.app[DAEMON].relay
    if relay is None:
        raise NotFound("this daemon is no relay (run it with --relay)")
    return relay


@routes.post("/v1/peer/relay")
async def relay_allocate(request: web.Request) -> web.Response:
    body = await read_body(request)
    if not isinstance(body, dict):
        raise ValidationError("body", "{peer, peer_ip}")
    return reply(request, _relay(request).allocate(caller(request), body.get("peer"),
                                                   body.get("peer_ip")))


@routes.delete("/v1/peer/relay/{id}")
async def relay_release(request: web.Request) -> web.Response:
    return reply(request, _relay(request).release(caller(request), request.match_info["id"]))


# -- the rendezvous hub (on the registry daemon) ------------------------------------------

def _hub(request: web.Request) -> rendezvous.Hub:
    hub = request.app[DAEMON].hub
    if hub is None:
        raise NotFound("this daemon is no rendezvous (it holds no registry)")
    return hub


@routes.get(rendezvous.CHANNEL_PATH)
async def rendezvous_channel(request: web.Request) -> web.StreamResponse:
    hub, who = _hub(request), caller(request)
    channel = hub.attach(who.spiffe_id, who.address)
    try:
        return await stream_ndjson(request, hub.events(channel), lambda e: e,
                                   request.app[DAEMON].stopping)
    finally:
        hub.detach(channel)


@routes.post(rendezvous.CALL_PATH)
async def rendezvous_call(request: web.Request) -> web.Response:
    hub, body = _hub(request), await read_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("to"), str) or \
            not isinstance(body.get("envelope"), str):
        raise ValidationError("body", "{to, envelope}")
    sealed, address = await hub.call(body["to"], body["envelope"], caller(request).address)
    return reply(request, {"envelope": sealed, "to_addr": address})


@routes.post(rendezvous.REPLY_PATH)
async def rendezvous_reply(request: web.Request) -> web.Response:
    body = await read_body(request)
    if not isinstance(body, dict):
        raise ValidationError("body", "{n, envelope}")
    _hub(request).reply(caller(request).spiffe_id, body.get("n"), body.get("envelope"))
    return reply(request, {})


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
