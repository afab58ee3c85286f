"""What the address elements (ipam, vl3ipam) share: leases per connection, stored in a
table of the state database, kept only once the rest of the chain accepted them, released
on close and when no connection came back for them after a restart."""

from __future__ import annotations

import dataclasses
from typing import Any

from nsmd.manager.chain import Element, Next
from nsmd.model import Connection, NetworkServiceRequest
from nsmd.state import StateDB


class LeasingElement(Element):
    table = ""  # the state table of the leases

    def __init__(self, db: StateDB):
        self.db = db
        self.leases: dict[str, Any] = {}

    async def request_with(self, request: NetworkServiceRequest, nxt: Next, lease: Any,
                           fresh: bool) -> Connection:
        """Passes the request on; a fresh lease is stored if it succeeds, dropped if not."""
        conn_id = request.connection.id
        try:
            result = await nxt.request(request)
        except BaseException:
            if fresh:
                self._release(conn_id)
            raise
        if fresh:
            self.db.put(self.table, conn_id, dataclasses.asdict(lease))
        return result

    async def close(self, conn: Connection, nxt: Next) -> None:
        try:
            await nxt.close(conn)
        finally:
            self._release(conn.id)

    def sweep(self, keep: set[str]) -> list[str]:
        """Releases leases no live connection holds (their connections did not come back
        after a restart); returns the connection ids released."""
        stale = [conn_id for conn_id in self.leases if conn_id not in keep]
        for conn_id in stale:
            self._release(conn_id)
        return stale

    def _release(self, conn_id: str) -> None:
        raise NotImplementedError
