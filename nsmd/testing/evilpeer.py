"""A malicious endpoint host for the zero-trust tests: `python -m nsmd.testing.evilpeer
IDENTITY_DIR IP:PORT MODE` serves /v1/peer/request over mutual TLS with an ordinary SVID,
answers each Request the way nsmd's endpoint side would (its tunnel answer, a /32 pair,
its own segment), then tampers with the answer as MODE says:

    service   another network service than the one asked for
    endpoint  another endpoint than the one asked for
    path      the caller's own segments rewritten
    id        the id of another connection
    expires   its segment valid until 9999
    dns       a search domain carrying a second line (`nameserver 203.0.113.9`)

No packet is ever sent: the tunnel answer only has to parse.
"""

from __future__ import annotations

import sys
import time
import uuid

import msgpack
from aiohttp import web

from nsmd.identity.svid import load_svid_dir
from nsmd.identity.tls import TlsContexts
from nsmd.model import (
    DNSConfig,
    Mechanism,
    NetworkServiceRequest,
    PathSegment,
    Route,
    from_wire,
    to_wire,
)
from nsmd.model.codec import MSGPACK
from nsmd.tunnel_keys import AEAD_PARAM, Ephemeral, offered_aeads

MODES = ("service", "endpoint", "path", "id", "expires", "dns")


def answer(request: NetworkServiceRequest, address: str, mode: str) -> dict:
    conn = request.connection
    offer = dict(request.mechanism_preferences[0].parameters)
    caller = conn.path.index
    conn.path.path_segments[caller + 1:] = [
        PathSegment(name="evil", id=str(uuid.uuid4()), expires=time.time() + 600)]
    ipc = conn.context.ip_context
    ipc.src_ip_addrs, ipc.dst_ip_addrs = ["100.64.70.2/32"], ["100.64.70.1/32"]
    ipc.src_routes, ipc.dst_routes = [Route(prefix="100.64.70.1/32")], \
        [Route(prefix="100.64.70.2/32")]
    conn.mechanism = Mechanism(cls="REMOTE", type="NSMD_UDP", parameters={
        **offer, "dst_ip": address, "dst_port": "51820", "dst_index": "300",
        "dst_public_key": Ephemeral().public_b64,
        AEAD_PARAM: offered_aeads(offer.get(AEAD_PARAM))[0]})
    if mode == "service":
        conn.network_service = "other-svc"
    elif mode == "endpoint":
        conn.network_service_endpoint_name = "other-ep"
    elif mode == "path":
        conn.path.path_segments[0].name = "nsc@someone-else"
    elif mode == "id":
        conn.id = str(uuid.uuid4())
    elif mode == "expires":
        conn.path.path_segments[-1].expires = 253402300799.0
    elif mode == "dns":
        conn.context.dns_context.configs = [DNSConfig(
            dns_server_ips=["100.64.70.1"], search_domains=["x\nnameserver 203.0.113.9"])]
    return to_wire(conn)


def main(argv: list[str]) -> None:
    identity_dir, listen, mode = argv
    assert mode in MODES, f"MODE is one of {', '.join(MODES)}"
    host, port = listen.rsplit(":", 1)

    async def request(req: web.Request) -> web.Response:
        body = msgpack.unpackb(await req.read())
        out = answer(from_wire(NetworkServiceRequest, body), host, mode)
        return web.Response(body=msgpack.packb(out), content_type=MSGPACK)

    app = web.Application()
    app.router.add_post("/v1/peer/request", request)
    tls = TlsContexts(load_svid_dir(identity_dir))
    web.run_app(app, host=host, port=int(port), ssl_context=tls.listener, print=None,
                handle_signals=True)


if __name__ == "__main__":
    main(sys.argv[1:])
