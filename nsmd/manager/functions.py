"""functions (endpoint side, between ipam and wire): the endpoint's network service
functions on each of its vWires.

Before the wire is built each function may adjust the connection (routes, prefixes);
after, each one's per-vWire part is attached and its stage installed on the wire, in the
endpoint's order from the client and in reverse on the way back (one engine thread runs
both directions, so a function's state is never shared across threads). A refresh finds
them in place; a wire rebuilt (new addresses) gets the same parts again; a close detaches
them. The parts' slow-path work (flush) runs every FLUSH_INTERVAL_S on the event loop.
"""

from __future__ import annotations

import asyncio
import logging

from nsmd.clock import Clock, every
from nsmd.dataplane import Dataplane, Wire
from nsmd.hosting import Hosting
from nsmd.manager.chain import Element, Next
from nsmd.model import Connection, NetworkServiceRequest
from nsmd.model.endpoint_spec import EndpointSpec
from nsmd.plugins.api import (
    FLUSH_INTERVAL_S,
    Function,
    FunctionHost,
    VWireFunction,
    parse_functions,
)

log = logging.getLogger("nsmd.manager.functions")


class Functions(Element):
    def __init__(self, hosting: Hosting, dataplane: Dataplane, clock: Clock,
                 host: FunctionHost | None = None):
        self.hosting = hosting
        self.host = host
        self.dataplane = dataplane
        self.clock = clock
        self._parsed: dict[str, tuple[EndpointSpec, list[Function]]] = {}
        # conn id -> (the wire its stages are on, its path position, each function's part)
        self._attached: dict[str, tuple[Wire, int, list[tuple[str, VWireFunction]]]] = {}

    async def request(self, request: NetworkServiceRequest, nxt: Next) -> Connection:
        conn = request.connection
        conn_id = conn.id
        functions = self.of(conn.network_service_endpoint_name)
        for function in functions:
            function.request(conn)
        result = await nxt.request(request)
        if functions:
            try:
                self._attach(conn_id, result, functions)
            except BaseException:
                await nxt.close(result)
                raise
        return result

    async def close(self, conn: Connection, nxt: Next) -> None:
        try:
            await nxt.close(conn)
        finally:
            self._detach(conn.id)

    def of(self, endpoint: str) -> list[Function]:
        spec = self.hosting.spec(endpoint)
        if spec is None or not spec.functions:
            return []
        cached = self._parsed.get(endpoint)
        if cached is None or cached[0] is not spec:
            cached = (spec, parse_functions(spec.functions,
                                            f"endpoint {endpoint!r}: spec.nsmd."))
            for function in cached[1]:
                function.host = self.host
            self._parsed[endpoint] = cached
        return cached[1]

    def stats(self, conn_id: str) -> dict[str, str]:
        """Each function's counters on one vWire, as `name.counter` path metrics."""
        attached = self._attached.get(conn_id)
        if attached is None:
            return {}
        return {f"{name}.{key}": str(value) for name, part in attached[2]
                for key, value in part.stats().items()}

    async def run(self, stopping: asyncio.Event) -> None:
        """Calls every part's flush() every FLUSH_INTERVAL_S until `stopping` is set."""
        async for _ in every(self.clock, FLUSH_INTERVAL_S, stopping):
            for _, _, parts in list(self._attached.values()):
                for name, part in parts:
                    try:
                        part.flush()
                    except Exception:  # a plugin's bug must not stop the others
                        log.exception("function %s failed to flush", name)

    def _attach(self, conn_id: str, conn: Connection, functions: list[Function]) -> None:
        hop = conn.path.index  # our segment: the wire is ours or a later hop's on this host
        wire = self.dataplane.wire_of([s.id for s in conn.path.path_segments[hop:]])
        if wire is None:
            return
        attached = self._attached.get(conn_id)
        if attached is not None and attached[0] is wire:
            return  # a refresh: in place already
        if attached is None:
            parts = [(f.name, part) for f in functions if (part := f.attach(conn)) is not None]
        else:
            parts = attached[2]  # the wire was rebuilt: the same state on the new one
        self.dataplane.set_stages(wire, hop, [part for _, part in parts])
        self._attached[conn_id] = (wire, hop, parts)
        log.info("vWire %s: functions %s", conn_id, ", ".join(n for n, _ in parts) or "none")

    def _detach(self, conn_id: str) -> None:
        attached = self._attached.pop(conn_id, None)
        if attached is None:
            return
        wire, hop, parts = attached
        if wire.lanes:  # still running (a passthrough hop goes before the wire does)
            self.dataplane.set_stages(wire, hop, [])
        for name, part in parts:
            try:
                part.close()
            except Exception:
                log.exception("function %s failed to close", name)
