"""Drop notices: a daemon that closes a peer's connection on its own tells that peer.

NSM carries this as a DELETE event up the monitor streams. Here, when this daemon drops a
connection a peer daemon created (its endpoint died, its timeout fired, its service's
matches changed), it posts the connection to the peer's /v1/peer/dropped, at the URL the
peer gave when it asked (kept only if on the address its TLS connection came from) and
only to the SPIFFE ID that created it; after a restart, it does so for each
endpoint-side wire it could not take back, to the peer the wire's record names. Without
the notice the peer would find out when the tunnel falls silent; with it, it heals at
once. The receiving side believes a notice only from the daemon its own wire for that
connection is keyed to (who could end the connection anyway) and then reselects, or, when
it merely relays the connection, drops its own part so that the notice travels on
towards the client.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from nsmd.caller import Caller
from nsmd.dataplane import Dataplane
from nsmd.errors import NotFound, NsmdError, ValidationError
from nsmd.manager.begin import Begin, Owner
from nsmd.manager.heal import Heal
from nsmd.model import Connection, Path, PathSegment, to_wire
from nsmd.peer.client import PeerClient

log = logging.getLogger("nsmd.manager.dropnotice")


class DropNotices:
    def __init__(self, peer: Callable[[], PeerClient | None], dataplane: Dataplane,
                 server_begin: Begin, client_begin: Begin, heal: Heal):
        self.peer = peer
        self.dataplane = dataplane
        self.server_begin = server_begin
        self.client_begin = client_begin
        self.heal = heal
        self._sending: set[asyncio.Task] = set()

    # -- sending ---------------------------------------------------------------------------

    def on_dropped(self, conn: Connection, owner: Owner) -> None:
        """Begin's listener: tells the peer that created `conn`, if a peer did."""
        client = self.peer()
        if client is None or not owner.spiffe_id or not owner.url:
            return
        self._track(self._send(client, conn, owner))

    async def _send(self, client: PeerClient, conn: Connection, owner: Owner) -> None:
        try:
            await client.call("POST", f"{owner.url}/v1/peer/dropped", to_wire(conn),
                              expect=owner.spiffe_id)
        except NsmdError as err:
            log.info("could not tell %s that connection %s was dropped (%s); its liveness "
                     "will notice", owner.spiffe_id, conn.id, err)

    def restarted(self, ours: str, owner: dict[str, str]) -> None:
        """This daemon restarted and could not take back the wire of connection `ours`
        (its record names the peer that asked for it): tells that peer now, rather than
        leaving it to notice the silence."""
        client = self.peer()
        if client is None:
            return
        conn = Connection(id=ours, path=Path(index=1, path_segments=[
            PathSegment(id=owner["segment"]), PathSegment(id=ours)]))
        self._track(self._send(client, conn, Owner(owner["spiffe_id"], owner["url"])))

    def _track(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    def stop(self) -> None:
        for task in self._sending:
            task.cancel()

    # -- receiving -------------------------------------------------------------------------

    async def received(self, conn: Connection, caller: Caller) -> str:
        """A peer dropped its side of `conn` (as that peer saw it): heals or drops ours;
        returns our connection's id."""
        segments, index = conn.path.path_segments, conn.path.index
        if not 0 < index < len(segments):
            raise ValidationError("path.index", f"the sender's segment (1 to "
                                  f"{len(segments) - 1})", index)
        ours = segments[index - 1].id
        wire = self.dataplane.get(ours)
        mine = self.server_begin.get(ours)
        if mine is None or wire is None or wire.remote is None or \
                wire.remote[1] != caller.spiffe_id:
            raise NotFound(f"no connection {ours} with a vWire keyed towards {caller}")
        held = self.client_begin.get(mine.path.path_segments[0].id)
        reason = f"{caller.spiffe_id} dropped its side"
        if held is not None:
            log.info("connection %s: %s; healing", ours, reason)
            self.heal.start(held.id, dead=reason)
            return ours
        log.info("connection %s: %s; dropping ours", ours, reason)
        await self.server_begin.close_by_id(ours)
        return ours
