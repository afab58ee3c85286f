"""held (client side): writes down the connections this daemon holds for local clients.

`nsmd connect` leaves its connection in the daemon's care; the request is stored so a
restarted daemon requests it again along the same path (restore) and the client keeps its
interface and addresses. The local user who made it is written down with it.
"""

from __future__ import annotations

import collections
import dataclasses

from nsmd.manager.chain import Element, Next
from nsmd.model import Connection, NetworkServiceRequest, State, from_wire, to_wire
from nsmd.state import StateDB


class Held(Element):
    def __init__(self, db: StateDB):
        self.db = db
        # conn id -> policy subjects of the local user who made it (close and restore
        # check them); empty for connections this daemon made on its own. Users are few and
        # their connections many: each distinct list of subjects is kept once.
        self._owners: dict[str, tuple[str, ...]] = {}
        self._subjects: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._per_user: collections.Counter[str] = collections.Counter()  # unix:uid=N -> held

    def stored(self) -> list[tuple[NetworkServiceRequest, list[str]]]:
        found = []
        for conn_id, doc in self.db.items("held"):
            owner = doc.pop("owner", [])
            self.own(conn_id, owner)
            found.append((from_wire(NetworkServiceRequest, doc), owner))
        return found

    def own(self, conn_id: str, subjects: list[str]) -> None:
        kept = tuple(subjects)
        self.disown(conn_id)
        self._owners[conn_id] = self._subjects.setdefault(kept, kept)
        if kept:
            self._per_user[kept[0]] += 1

    def disown(self, conn_id: str) -> None:
        kept = self._owners.pop(conn_id, None)
        if kept:
            self._per_user[kept[0]] -= 1
            if not self._per_user[kept[0]]:
                del self._per_user[kept[0]]

    def held_by(self, subject: str) -> int:
        """How many connections the local user `subject` (unix:uid=N) holds (its quota)."""
        return self._per_user[subject]

    def owner(self, conn_id: str) -> list[str]:
        return list(self._owners.get(conn_id, ()))

    def forget(self, conn_id: str) -> None:
        self.db.delete("held", conn_id)
        self.disown(conn_id)

    async def request(self, request: NetworkServiceRequest, nxt: Next) -> Connection:
        conn = await nxt.request(request)
        kept = dataclasses.replace(request, connection=conn)
        self.db.put("held", conn.id, {**to_wire(kept), "owner": self.owner(conn.id)})
        return conn

    async def close(self, conn: Connection, nxt: Next) -> None:
        try:
            await nxt.close(conn)
        finally:
            if conn.state != State.RESELECT_REQUESTED:  # a reselect's close: still held
                self.forget(conn.id)
