"""metrics: counts Requests and Closes by outcome and times Requests."""

from __future__ import annotations

import time

from nsmd.manager.chain import Element, Next
from nsmd.metrics import Metrics
from nsmd.model import Connection, NetworkServiceRequest


class RequestMetrics(Element):
    label = "metrics"

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    async def request(self, request: NetworkServiceRequest, nxt: Next) -> Connection:
        started = time.perf_counter()
        try:
            conn = await nxt.request(request)
        except BaseException:
            self.metrics.requests.labels("request", "error").inc()
            raise
        self.metrics.requests.labels("request", "ok").inc()
        self.metrics.request_seconds.observe(time.perf_counter() - started)
        return conn

    async def close(self, conn: Connection, nxt: Next) -> None:
        try:
            await nxt.close(conn)
        except BaseException:
            self.metrics.requests.labels("close", "error").inc()
            raise
        self.metrics.requests.labels("close", "ok").inc()
