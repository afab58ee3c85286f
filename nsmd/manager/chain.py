"""Chains of elements. Each element's request()/close() does its part and calls `nxt` once.

The order of a chain is the list given to Chain(...), written out where the chain is built
(nsmd/manager/build.py), not hidden in a context. Side effects happen after `nxt` returns
and are rolled back by the element itself when `nxt` fails.
"""

from __future__ import annotations

from collections.abc import Sequence

from nsmd.model import Connection, NetworkServiceRequest


class Next:
    """The rest of the chain after the calling element."""

    __slots__ = ("_elements", "_index")

    def __init__(self, elements: Sequence[Element], index: int):
        self._elements = elements
        self._index = index

    def place(self) -> tuple[int, int]:
        """Where in which chain this continues: equal for equal Nexts, for sharing one."""
        return id(self._elements), self._index

    async def request(self, request: NetworkServiceRequest) -> Connection:
        if self._index == len(self._elements):
            return request.connection
        element = self._elements[self._index]
        return await element.request(request, Next(self._elements, self._index + 1))

    async def close(self, conn: Connection) -> None:
        if self._index == len(self._elements):
            return
        element = self._elements[self._index]
        await element.close(conn, Next(self._elements, self._index + 1))


class Element:
    """Pass-through by default; subclasses override what their feature needs."""

    label = ""   # its name in a chain's description (default: the class name, lowercased)

    def describe(self) -> str:
        """What this element is in a chain's description (Chain.describe)."""
        return self.label or type(self).__name__.lower()

    async def request(self, request: NetworkServiceRequest, nxt: Next) -> Connection:
        return await nxt.request(request)

    async def close(self, conn: Connection, nxt: Next) -> None:
        await nxt.close(conn)


class Chain(Element):
    """A sequence of elements; itself an element, so chains nest. A named chain appears in
    another's description by its name."""

    def __init__(self, *elements: Element, name: str = ""):
        self.elements = tuple(elements)
        self.label = name

    def describe(self, expand: bool = False) -> str:
        """Its elements in order, `a -> b -> c` (the docs and build.py show this; a test
        keeps them equal); a named chain inside another is its name unless `expand`."""
        if self.label and not expand:
            return self.label
        return " -> ".join(e.describe() for e in self.elements)

    async def request(self, request: NetworkServiceRequest, nxt: Next | None = None) -> Connection:
        conn = await Next(self.elements, 0).request(request)
        if nxt is None:
            return conn
        request.connection = conn
        return await nxt.request(request)

    async def close(self, conn: Connection, nxt: Next | None = None) -> None:
        await Next(self.elements, 0).close(conn)
        if nxt is not None:
            await nxt.close(conn)
