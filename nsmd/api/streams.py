"""NDJSON streams (Monitor, registry watch): one JSON document per line until either end stops."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

NDJSON = "application/x-ndjson"


async def stream_ndjson(request: web.Request, events: AsyncIterator[Any],
                        encode: Callable[[Any], Any], stopping: asyncio.Event,
                        ) -> web.StreamResponse:
    """Writes encode(event) per line; ends on daemon stop, client disconnect or end of events."""
    response = web.StreamResponse(headers={"Content-Type": NDJSON, "Cache-Control": "no-cache"})
    await response.prepare(request)
    stop = asyncio.ensure_future(stopping.wait())
    try:
        while True:
            nxt = asyncio.ensure_future(anext(events))
            done, _ = await asyncio.wait({nxt, stop}, return_when=asyncio.FIRST_COMPLETED)
            if nxt not in done:
                nxt.cancel()
                break
            try:
                event = nxt.result()
            except StopAsyncIteration:
                break
            except Exception as err:  # e.g. a watcher that fell behind
                await response.write((json.dumps({"error": str(err)}) + "\n").encode())
                break
            await response.write((json.dumps(encode(event), separators=(",", ":")) + "\n")
                                 .encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        stop.cancel()
    return response
