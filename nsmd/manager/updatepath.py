"""updatepath: adds or reuses this hop's path segment; conn.id becomes this hop's segment id.

NSM's rules (sdk: pkg/networkservice/common/updatepath): an empty path gets our segment
(id = the connection id, or a new UUID); if the current segment is ours we reuse it
(a refresh); otherwise the current segment's id must equal conn.id, the index moves on,
and the next segment is reused if it carries our name, else it and everything after it
is replaced by a new segment. On the way back, index and id return to the caller's.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from nsmd.errors import ValidationError
from nsmd.manager.chain import Element, Next
from nsmd.model import Connection, NetworkServiceRequest, Path, PathSegment


def update_path(path: Path, conn_id: str, name: str) -> int:
    """Updates `path` in place for hop `name`; returns the caller's index."""
    segments = path.path_segments
    if not segments:
        segments.append(PathSegment(name=name, id=conn_id or str(uuid.uuid4())))
        path.index = 0
        return 0
    if path.index >= len(segments):
        raise ValidationError("connection.path.index", f"an index below {len(segments)}",
                              path.index)
    if segments[path.index].name == name:
        return path.index
    if segments[path.index].id != conn_id:
        raise ValidationError(
            "connection.id", f"the id of path segment {path.index} "
            f"({segments[path.index].id!r})", conn_id)
    caller = path.index
    path.index += 1
    if path.index < len(segments) and segments[path.index].name == name:
        return caller
    del segments[path.index:]
    segments.append(PathSegment(name=name, id=str(uuid.uuid4())))
    return caller


class UpdatePath(Element):
    def __init__(self, name: str | Callable[[Connection], str]):
        self._name = name if callable(name) else (lambda _conn: name)

    async def request(self, request: NetworkServiceRequest, nxt: Next) -> Connection:
        conn = request.connection
        caller = update_path(conn.path, conn.id, self._name(conn))
        conn.id = conn.path.path_segments[conn.path.index].id
        result = await nxt.request(request)
        result.path.index = caller
        result.id = result.path.path_segments[caller].id
        return result

    async def close(self, conn: Connection, nxt: Next) -> None:
        caller = update_path(conn.path, conn.id, self._name(conn))
        conn.id = conn.path.path_segments[conn.path.index].id
        try:
            await nxt.close(conn)
        finally:
            conn.path.index = caller
            conn.id = conn.path.path_segments[caller].id
