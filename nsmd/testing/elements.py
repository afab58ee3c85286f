"""Chain elements for tests: count calls, check what passes, fail on demand (NSM's test kit)."""

from __future__ import annotations

from collections.abc import Callable

from nsmd.errors import NsmdError
from nsmd.manager.chain import Element, Next
from nsmd.model import Connection, NetworkServiceRequest


class Count(Element):
    def __init__(self) -> None:
        self.requests = 0
        self.closes = 0
        self.last_request: NetworkServiceRequest | None = None

    async def request(self, request: NetworkServiceRequest, nxt: Next) -> Connection:
        self.requests += 1
        self.last_request = request
        return await nxt.request(request)

    async def close(self, conn: Connection, nxt: Next) -> None:
        self.closes += 1
        await nxt.close(conn)


class Checks(Element):
    """Runs `on_request(request)` before and `on_response(conn)` after the rest of the chain."""

    def __init__(self, on_request: Callable[[NetworkServiceRequest], object] | None = None,
                 on_response: Callable[[Connection], object] | None = None,
                 on_close: Callable[[Connection], object] | None = None):
        self.on_request = on_request
        self.on_response = on_response
        self.on_close = on_close

    async def request(self, request: NetworkServiceRequest, nxt: Next) -> Connection:
        if self.on_request:
            self.on_request(request)
        conn = await nxt.request(request)
        if self.on_response:
            self.on_response(conn)
        return conn

    async def close(self, conn: Connection, nxt: Next) -> None:
        if self.on_close:
            self.on_close(conn)
        await nxt.close(conn)


class InjectError(Element):
    """Fails the calls whose 0-based numbers are in `fail_requests` / `fail_closes`."""

    def __init__(self, fail_requests: set[int] | None = None,
                 fail_closes: set[int] | None = None,
                 error: Callable[[], Exception] = lambda: NsmdError("injected error")):
        self.fail_requests = fail_requests if fail_requests is not None else set()
        self.fail_closes = fail_closes if fail_closes is not None else set()
        self.error = error
        self._requests = 0
        self._closes = 0

    async def request(self, request: NetworkServiceRequest, nxt: Next) -> Connection:
        number = self._requests
        self._requests += 1
        if number in self.fail_requests:
            raise self.error()
        return await nxt.request(request)

    async def close(self, conn: Connection, nxt: Next) -> None:
        number = self._closes
        self._closes += 1
        if number in self.fail_closes:
            raise self.error()
        await nxt.close(conn)
