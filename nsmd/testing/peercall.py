"""Calls a daemon's peer API with any SVID, as another daemon (or an attacker holding an
SVID of the trust domain) would: `python -m nsmd.testing.peercall IDENTITY_DIR METHOD URL
[JSON_BODY]` prints {"status": ..., "body": ..., "seconds": the time to the answer}. For
tests; run it inside a namespace to call from that host's address. NSMD_FEDERATE
(TD=BUNDLE.pem,... as --federate) lets it call daemons of other trust domains."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import aiohttp

from nsmd.identity.federation import load_bundles
from nsmd.identity.svid import load_svid_dir
from nsmd.identity.tls import TlsContexts


async def call(identity_dir: str, method: str, url: str, body: object = None) -> dict:
    tls = TlsContexts(load_svid_dir(identity_dir),
                      load_bundles(os.environ.get("NSMD_FEDERATE", "")))
    async with aiohttp.ClientSession() as session:
        started = time.monotonic()
        async with session.request(method, url, json=body, ssl=tls.client(),
                                   timeout=aiohttp.ClientTimeout(total=20)) as resp:
            text = await resp.text()
            seconds = time.monotonic() - started
            try:
                payload = json.loads(text)
            except ValueError:
                payload = text
            return {"status": resp.status, "body": payload, "seconds": seconds}


def main(argv: list[str]) -> int:
    identity_dir, method, url = argv[:3]
    body = json.loads(argv[3]) if len(argv) > 3 else None
    print(json.dumps(asyncio.run(call(identity_dir, method, url, body))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
