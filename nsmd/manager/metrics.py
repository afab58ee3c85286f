"""metrics: counts Requests and Closes by outcome and service, and times Requests.

A service is named in the label only if it is registered: a caller asking for made-up
names must not grow the metrics without bound."""

from __future__ import annotations

import time
from collections.abc import Callable

from nsmd.manager.chain import Element, Next
from nsmd.metrics import Metrics
from nsmd.model import Connection, NetworkServiceRequest


class RequestMetrics(Element):
    label = "metrics"

    def __init__(self, metrics: Metrics, registered: Callable[[str], bool]):
        self.metrics = metrics
        self.registered = registered

    def _count(self, op: str, result: str, service: str) -> None:
        label = service if self.registered(service) else "unregistered"
        self.metrics.requests.labels(op, result, label).inc()

    async def request(self, request: NetworkServiceRequest, nxt: Next) -> Connection:
        started = time.perf_counter()
        service = request.connection.network_service
        try:
            conn = await nxt.request(request)
        except BaseException:
            self._count("request", "error", service)
            raise
        self._count("request", "ok", service)
        self.metrics.request_seconds.observe(time.perf_counter() - started)
        return conn

    async def close(self, conn: Connection, nxt: Next) -> None:
        try:
            await nxt.close(conn)
        except BaseException:
            self._count("close", "error", conn.network_service)
            raise
        self._count("close", "ok", conn.network_service)
