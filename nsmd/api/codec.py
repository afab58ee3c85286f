"""Request bodies in, responses out: JSON for people and curl, msgpack between daemons.

Errors become JSON `{"error": ..., "field": ...}` with the status of the NsmdError.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import msgpack
import msgspec
from aiohttp import web

from nsmd.caller import Caller
from nsmd.errors import NsmdError, PermissionDenied, ValidationError
from nsmd.model.codec import MSGPACK
from nsmd.quotas import QuotaExceeded, Quotas

BIG_BODY = 256 << 10   # bodies above this are decoded in a worker thread
log = logging.getLogger("nsmd.api")
audit_log = logging.getLogger("nsmd.audit")


async def read_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        return {}
    if len(raw) > BIG_BODY:  # decoded off the event loop, which keeps serving meanwhile
        return await asyncio.to_thread(_decode_body, raw, request.content_type)
    return _decode_body(raw, request.content_type)


def _decode_body(raw: bytes, content_type: str) -> Any:
    if content_type == MSGPACK:
        try:
            return msgpack.unpackb(raw, raw=False)
        except (ValueError, msgpack.ExtraData) as err:
            raise ValidationError("body", "a msgpack document", detail=f"body: not valid "
                                  f"msgpack ({err})") from None
    try:
        return json.loads(raw)
    except ValueError as err:
        raise ValidationError("body", "a JSON document",
                              detail=f"body: not valid JSON ({err})") from None


def reply(request: web.Request, data: Any, status: int = 200) -> web.Response:
    if MSGPACK in request.headers.get("Accept", ""):
        return web.Response(body=msgpack.packb(data), status=status, content_type=MSGPACK)
    # msgspec's encoder: compact JSON, UTF-8, several times faster than json.dumps (a
    # registry Find of 100 endpoints spent a sixth of its time there)
    return web.Response(body=_JSON.encode(data), status=status,
                        content_type="application/json")


_JSON = msgspec.json.Encoder()


def work_middleware(done: Callable[[], None]) -> Callable:
    """Calls done() after each request (the daemon's heap trimmer: memory a burst of
    requests freed goes back once they stop)."""
    @web.middleware
    async def work_done(request: web.Request, handler):
        try:
            return await handler(request)
        finally:
            done()
    return work_done


@web.middleware
async def errors_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except NsmdError as err:
        if err.status >= 500:
            log.error("%s %s failed: %s", request.method, request.path, err)
        return web.json_response(err.to_json(), status=err.status)
    except web.HTTPException as err:
        if err.status >= 400 and err.content_type != "application/json":
            return web.json_response({"error": err.reason}, status=err.status)
        raise
    except Exception as err:  # a bug: say so in the log with the trace, and in one line
        log.exception("%s %s crashed", request.method, request.path)
        return web.json_response(
            {"error": f"internal error ({type(err).__name__}: {err}); see the daemon's log"},
            status=500)


def audit_middleware(caller_of: Callable[[web.Request], Caller],
                     denied: Callable[[str], None]) -> Callable:
    """The audit trail: every refusal by a policy (403) or a quota (429) is logged once,
    with the policy or quota, the caller and the request; denied(policy) counts it."""
    @web.middleware
    async def audit(request: web.Request, handler):
        try:
            return await handler(request)
        except (PermissionDenied, QuotaExceeded) as err:
            _audit(err, str(caller_of(request)), f"{request.method} {request.path}", denied)
            raise
    return audit


def log_refusal(err: PermissionDenied | QuotaExceeded, who: str, what: str,
                metrics) -> None:
    """The audit trail's line for a refusal outside an HTTP request (a sealed call)."""
    _audit(err, who, what, lambda policy: metrics.denials.labels(policy).inc())


def _audit(err: PermissionDenied | QuotaExceeded, who: str, what: str,
           denied: Callable[[str], None]) -> None:
    name = err.policy if isinstance(err, PermissionDenied) else err.quota
    audit_log.warning("%s: %s refused: %s", who, what, err, extra={
        "policy" if isinstance(err, PermissionDenied) else "quota": name,
        "subject": who, "request": what})
    if isinstance(err, PermissionDenied):
        denied(name)


def body_quota_middleware(quotas: Quotas, caller_of: Callable[[web.Request], Caller]):
    """Bodies beyond the body-bytes quota are refused before they are read, but root's on
    the API socket (a manifest of many thousand endpoints is an admin's to apply)."""
    @web.middleware
    async def limit(request: web.Request, handler):
        if request.body_exists:
            who = caller_of(request)
            if not who.is_root:
                quotas.check_size("body-bytes", request.content_length, who)
        return await handler(request)
    return limit


def query_labels(values: list[str], where: str = "label") -> dict[str, str]:
    labels = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValidationError(where, "key=value", item)
        labels[key] = value
    return labels
