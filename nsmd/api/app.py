"""The aiohttp applications: the API on its unix-socket site (mode 0600, or 0660 with
--api-group) and the peers' on the mTLS listener."""

from __future__ import annotations

import logging
import os
import time

from aiohttp import web
from cryptography import x509

from nsmd import __version__
from nsmd.api import connections, registry
from nsmd.api.codec import (
    audit_middleware,
    body_quota_middleware,
    errors_middleware,
    reply,
    work_middleware,
)
from nsmd.api.keys import DAEMON
from nsmd.api.openapi import openapi_document
from nsmd.caller import local_caller
from nsmd.config import group_id
from nsmd.identity.svid import verify_chain
from nsmd.identity.tls import peer_certificate

misc = web.RouteTableDef()
SHUTDOWN_TIMEOUT_S = 2.0
BACKLOG = 4096  # bursts of clients (1,000 concurrent connects) must not be refused
MAX_BODY_BYTES = 256 << 20  # a manifest of many thousand endpoints fits (local API only)
log = logging.getLogger("nsmd.api")


@misc.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    ok = daemon.dataplane.running or daemon.config.registry_only  # a floating one has none
    return web.json_response({"ok": ok}, status=200 if ok else 503)


@misc.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    body = request.app[DAEMON].metrics.render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


@misc.get("/v1/status")
async def status(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    return reply(request, {
        "name": daemon.config.name,
        "version": __version__,
        "url": daemon.url,
        "identity": daemon.id.describe() if daemon.id else None,
        "state_dir": daemon.config.state_dir,
        "uptime_s": round(time.monotonic() - daemon.started_at, 3),
        "services": len(daemon.registry.services),
        "endpoints": len(daemon.registry.endpoints),
        "hosted_endpoints": len(daemon.hosting),
        "connections": len(daemon.manager.connections()),
        "heal": {"healing": len(daemon.manager.heal.healing()), **daemon.manager.heal.healed},
        "leases": len(daemon.manager.ipam.leases) + len(daemon.manager.vl3_ipam.leases),
        "dataplane": daemon.dataplane.totals(),
        "engines": daemon.dataplane.per_engine(),
    })


@misc.get("/v1/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


def build_app(daemon) -> web.Application:
    caller = lambda r: local_caller(r.transport)  # noqa: E731
    app = web.Application(middlewares=[
        work_middleware(daemon.heap.touch), errors_middleware,
        audit_middleware(caller, lambda policy: daemon.metrics.denials.labels(policy).inc()),
        body_quota_middleware(daemon.quotas, caller)], client_max_size=MAX_BODY_BYTES)
    app[DAEMON] = daemon
    app.add_routes(misc)
    app.add_routes(registry.routes)
    app.add_routes(connections.routes)
    return app


async def serve_unix(app: web.Application, path: str, group: str = "") -> web.AppRunner:
    """The API socket: 0600 (root only), or 0660 for `group` too (--api-group). Policies
    then tell members apart by the uid and groups the kernel reports for each caller."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    if os.path.exists(path):
        os.unlink(path)  # a stale socket from a crashed run; a live daemon holds a lock
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    old_umask = os.umask(0o177)  # created 0600, never briefly world-connectable
    try:
        await web.UnixSite(runner, path, backlog=BACKLOG).start()
    finally:
        os.umask(old_umask)
    if group:
        os.chown(path, -1, group_id(group))
        os.chmod(path, 0o660)
    else:
        os.chmod(path, 0o600)
    return runner


async def serve_peers(app: web.Application, listen: str, ssl_context) -> web.AppRunner:
    """The mTLS listener for other daemons (registry and vWire requests only)."""
    host, _, port = listen.rpartition(":")
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    await web.TCPSite(runner, host, int(port), ssl_context=ssl_context,
                      backlog=BACKLOG).start()
    return runner



async def serve_metrics(metrics, host: str, port: int) -> web.AppRunner:
    """Prometheus /metrics alone, over plain HTTP (--metrics-listen): what a scraper
    reaches, nothing of the API."""
    async def scrape(request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(),
                            headers={"Content-Type": "text/plain; version=0.0.4"})

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


def drop_untrusted_peers(runner: web.AppRunner,
                         bundle: tuple[x509.Certificate, ...]) -> int:
    """Closes the peer connections whose certificate `bundle` no longer vouches for (a CA
    left it); returns how many."""
    server = runner.server
    dropped = 0
    for handler in server.connections if server else []:
        transport = handler.transport
        if transport is None:
            continue  # closing already
        try:
            verify_chain([peer_certificate(transport.get_extra_info("ssl_object"))], bundle)
        except Exception:  # untrusted now, or not verifiable: fail closed
            log.info("closing a peer connection its CA no longer vouches for")
            handler.force_close()
            dropped += 1
    return dropped
