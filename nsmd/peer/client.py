"""Calls to other daemons over mutual TLS, msgpack both ways.

One aiohttp session with pooled connections; every failure becomes one NsmdError that
says which peer and what went wrong, so a failing candidate endpoint is simply skipped.
Each call names the SPIFFE ID it expects to reach (the endpoint's registrant, the
registry's configured ID): the TLS handshake fails unless the peer is exactly that ID, so
a request never goes to an impostor. Connections are pooled per expected ID and per SVID
generation (aiohttp keys its pool by the SSL context), so a token signed with the current
key always travels on a connection made with the current certificate.

A daemon whose listener cannot be reached (behind NAT without --advertise, a firewall) is
called through the rendezvous instead (rendezvous.py): the manager's peer calls
(/v1/peer/...) to a named SPIFFE ID, sealed end to end; its URL is then remembered as
unreachable for a while, so later calls go there at once.
"""

from __future__ import annotations

import errno
import json
import logging
import ssl
import time
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgpack

from nsmd.errors import (
    Conflict,
    NotFound,
    NsmdError,
    PermissionDenied,
    SelectionError,
    ValidationError,
)
from nsmd.identity.tls import TlsContexts
from nsmd.model.codec import MSGPACK

REQUEST_TIMEOUT_S = 15.0
# A daemon's TCP handshake takes a millisecond; a host that does not answer in 2 s (one
# SYN retransmit) is away, and the next candidate should be tried.
CONNECT_TIMEOUT_S = 2.0
# Tells the called daemon where we listen, so it can notify us (drop notices); it is
# believed only for the IP address our TLS connection comes from.
URL_HEADER = "Nsmd-Url"
UNREACHABLE_S = 300.0   # a listener that did not answer is tried again after this long
# No route to the listener's address, or no answer at all: behind a NAT or a firewall that
# drops, the rendezvous may still reach it. A refusal (a reset: nobody listens, or a
# firewall that rejects) means the host is there and does not take the call: no detour.
NO_WAY_THERE = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EHOSTDOWN, errno.ENETDOWN,
                errno.ETIMEDOUT}
log = logging.getLogger("nsmd.peer")


class PeerError(SelectionError):
    """A peer daemon could not be reached or refused the call."""


class _Unreachable(Exception):
    """No connection to the listener could be made (so nothing of the call was sent)."""


class PeerClient:
    def __init__(self, tls: TlsContexts, own_url: str = ""):
        self.tls = tls
        self.own_url = own_url   # https://IP:PORT of our listener ("" = none)
        self._session: aiohttp.ClientSession | None = None
        self.rendezvous: Any = None   # rendezvous.Rendezvous, once the daemon made one
        self._unreachable: dict[str, float] = {}   # listener -> until (monotonic)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S,
                                              sock_connect=CONNECT_TIMEOUT_S))
        return self._session

    async def call(self, method: str, url: str, body: Any = None, expect: str = "",
                   timeout_s: float | None = None, direct: bool = False) -> Any:
        """One request to the daemon at `url`, which must be `expect` ("" = any ID of our
        trust domain); `timeout_s` bounds it more tightly than REQUEST_TIMEOUT_S. A
        manager call to a listener we cannot connect to goes through the rendezvous,
        unless `direct`."""
        parts = urllib.parse.urlsplit(url)
        listener, op = f"{parts.scheme}://{parts.netloc}", parts.path
        relayable = not direct and method == "POST" and expect and op.startswith(
            "/v1/peer/") and self.rendezvous is not None
        if relayable and self._unreachable.get(listener, 0.0) > time.monotonic():
            return await self.rendezvous.call(expect, op, body, timeout_s or REQUEST_TIMEOUT_S)
        try:
            result = await self._direct(method, url, body, expect, timeout_s)
        except _Unreachable as err:
            if not relayable:
                raise PeerError(str(err)) from None
            log.info("%s; calling %s through the rendezvous", err, expect)
            self._unreachable[listener] = time.monotonic() + UNREACHABLE_S
            return await self.rendezvous.call(expect, op, body, timeout_s or REQUEST_TIMEOUT_S)
        if self._unreachable.pop(listener, None) and self.rendezvous is not None:
            self.rendezvous.observed.pop(expect, None)   # reachable again
        return result

    def reached_at(self, spiffe_id: str) -> str | None:
        """The address the rendezvous saw `spiffe_id` at, if our calls to it go that way
        (its listener's address is then a private one: its NAT's public address is where
        its tunnel datagrams come from)."""
        rendezvous = self.rendezvous
        return rendezvous.observed.get(spiffe_id) if rendezvous is not None else None

    async def _direct(self, method: str, url: str, body: Any, expect: str,
                      timeout_s: float | None) -> Any:
        data = msgpack.packb(body) if body is not None else None
        headers = {"Accept": MSGPACK, "Content-Type": MSGPACK}
        if self.own_url:
            headers[URL_HEADER] = self.own_url
        try:
            timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=min(
                timeout_s, CONNECT_TIMEOUT_S)) if timeout_s else None
            async with self._http().request(method, url, data=data, headers=headers,
                                            ssl=self.tls.client(expect),
                                            timeout=timeout) as resp:
                raw = await resp.read()
                payload = _decode(raw, resp.content_type)
                if resp.status >= 400:
                    raise _error(url, resp.status, payload)
                return payload
        except aiohttp.ConnectionTimeoutError as err:
            raise _Unreachable(f"peer {url} unreachable: {err or type(err).__name__}") \
                from None
        except aiohttp.ClientConnectorError as err:
            if not isinstance(err, aiohttp.ClientSSLError) and err.os_error.errno in NO_WAY_THERE:
                # nothing was sent: the call may go another way
                raise _Unreachable(f"peer {url} unreachable: {err}") from None
            raise PeerError(f"peer {url} unreachable: {err}") from None
        except (aiohttp.ClientError, ssl.SSLError, OSError, TimeoutError) as err:
            raise PeerError(f"peer {url} unreachable: {err or type(err).__name__}") from None

    async def stream(self, url: str, expect: str = "") -> AsyncIterator[Any]:
        """NDJSON lines of a watch stream, until the peer ends it or the link breaks."""
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        try:
            async with self._http().get(url, timeout=timeout,
                                        ssl=self.tls.client(expect)) as resp:
                if resp.status >= 400:
                    raise _error(url, resp.status, _decode(await resp.read(),
                                                           resp.content_type))
                async for line in resp.content:
                    if line.strip():
                        yield json.loads(line)
        except (aiohttp.ClientError, ssl.SSLError, OSError) as err:
            raise PeerError(f"peer {url} stream broke: {err or type(err).__name__}") from None

    async def close(self) -> None:
        """Closes every pooled connection and stream (also used when a CA left the bundle:
        nothing it authenticated stays open); the next call opens new ones."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


def _decode(raw: bytes, content_type: str) -> Any:
    if not raw:
        return None
    if content_type == MSGPACK:
        return msgpack.unpackb(raw)
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def _error(url: str, status: int, payload: Any) -> NsmdError:
    message = payload.get("error") if isinstance(payload, dict) else str(payload)
    text = f"peer {url}: {message}"
    if status == 400:
        return ValidationError(payload.get("field", "") if isinstance(payload, dict) else "",
                               "", detail=text)
    if status == 403:
        policy = payload.get("policy", "") if isinstance(payload, dict) else ""
        return PermissionDenied(str(policy or "unknown"), str(message), detail=text)
    if status == 404:
        return NotFound(text)
    if status == 409:
        return Conflict(text)
    return PeerError(text)
