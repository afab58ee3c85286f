"""held (client side): writes down the connections this daemon holds for local clients.

`nsmd connect` leaves its connection in the daemon's care; the request is stored so a
restarted daemon requests it again along the same path (restore) and the client keeps its
interface and addresses.
"""

from __future__ import annotations

import dataclasses

from nsmd.manager.chain import Element, Next
from nsmd.model import Connection, NetworkServiceRequest, from_wire, to_wire
from nsmd.state import StateDB


class Held(Element):
    def __init__(self, db: StateDB):
        self.db = db

    def stored(self) -> list[NetworkServiceRequest]:
        return [from_wire(NetworkServiceRequest, doc) for _, doc in self.db.items("held")]

    def forget(self, conn_id: str) -> None:
        self.db.delete("held", conn_id)

    async def request(self, request: NetworkServiceRequest, nxt: Next) -> Connection:
        conn = await nxt.request(request)
        kept = dataclasses.replace(request, connection=conn)
        self.db.put("held", conn.id, to_wire(kept))
        return conn

    async def close(self, conn: Connection, nxt: Next) -> None:
        try:
            await nxt.close(conn)
        finally:
            self.db.delete("held", conn.id)
