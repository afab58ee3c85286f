"""Manager handlers: /v1/connections (Request, Close, list) and /v1/monitor (stream)."""

from __future__ import annotations

from aiohttp import web

from nsmd import defaults
from nsmd.api.codec import read_body, reply
from nsmd.api.keys import DAEMON
from nsmd.api.streams import stream_ndjson
from nsmd.caller import local_caller
from nsmd.errors import ValidationError
from nsmd.manager.monitor import MonitorScopeSelector, SegmentSelector
from nsmd.model import to_wire
from nsmd.model.endpoint_spec import check_ifname, check_netns
from nsmd.model.registry import check_name

routes = web.RouteTableDef()
CONNECT_FIELDS = ("network_service", "labels", "netns", "ifname", "client", "timeout_s")
MAX_CONNECT_TIMEOUT_S = 3600.0


@routes.post("/v1/connections")
async def connect(request: web.Request) -> web.Response:
    body = await read_body(request)
    if not isinstance(body, dict):
        raise ValidationError("body", "an object with network_service, labels, netns, ifname")
    unknown = sorted(set(body) - set(CONNECT_FIELDS))
    if unknown:
        raise ValidationError(unknown[0], f"one of {', '.join(CONNECT_FIELDS)}",
                              detail=f"{unknown[0]}: unknown field")
    service = body.get("network_service")
    if not isinstance(service, str):
        raise ValidationError("network_service", "the name of a network service", service)
    check_name(service, "network_service")
    labels = body.get("labels") or {}
    if not isinstance(labels, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise ValidationError("labels", "a mapping of strings to strings", labels)
    netns = body.get("netns") or ""
    ifname = body.get("ifname") or ""
    client = body.get("client") or ""
    for name, value in (("netns", netns), ("ifname", ifname), ("client", client)):
        if not isinstance(value, str):
            raise ValidationError(name, "a string", value)
    check_netns(netns, "netns")
    if ifname:
        check_ifname(ifname, "ifname")
    timeout_s = body.get("timeout_s", defaults.CONNECT_TIMEOUT_S)
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or \
            not 0 <= timeout_s <= MAX_CONNECT_TIMEOUT_S:
        raise ValidationError("timeout_s", f"seconds from 0 to {MAX_CONNECT_TIMEOUT_S:.0f}",
                              timeout_s)
    conn = await request.app[DAEMON].manager.connect(service, labels, netns, ifname, client,
                                                     local_caller(request.transport),
                                                     float(timeout_s))
    return reply(request, to_wire(conn), status=201)


@routes.get("/v1/connections")
async def list_connections(request: web.Request) -> web.Response:
    service = request.query.get("service", "")
    conns = request.app[DAEMON].manager.connections()
    return reply(request, [to_wire(c) for c in conns
                           if not service or c.network_service == service])


@routes.get("/v1/peers")
async def list_peers(request: web.Request) -> web.Response:
    return reply(request, request.app[DAEMON].dataplane.peers())


@routes.get("/v1/connections/{id}")
async def get_connection(request: web.Request) -> web.Response:
    return reply(request, to_wire(request.app[DAEMON].manager.get(request.match_info["id"])))


@routes.delete("/v1/connections/{id}")
async def close_connection(request: web.Request) -> web.Response:
    await request.app[DAEMON].manager.close(request.match_info["id"],
                                            local_caller(request.transport))
    return reply(request, {"closed": request.match_info["id"]})


@routes.get("/v1/monitor")
async def monitor(request: web.Request) -> web.StreamResponse:
    daemon = request.app[DAEMON]
    selector = MonitorScopeSelector(
        path_segments=[SegmentSelector(id=i) for i in request.query.getall("connection", [])],
        network_services=request.query.getall("service", []))
    if len(selector.path_segments) > 1:
        raise ValidationError("connection", "at most one connection id")
    sub = daemon.manager.monitor.subscribe(selector)
    try:
        return await stream_ndjson(request, sub, to_wire, daemon.stopping)
    finally:
        sub.close()
