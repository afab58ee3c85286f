"""Identity changes: key files written safely, --identity-dir reloaded, and no CA trusted
after it left the bundle."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import ssl

import pytest

from nsmd.identity.ca import init_ca, issue_svid
from nsmd.identity.files import FileIdentity
from nsmd.identity.svid import load_svid_dir
from nsmd.identity.tls import TlsContexts, peer_spiffe_id

TD = "example.org"


@pytest.fixture
def cas(tmp_path):
    for name in ("ca1", "ca2"):
        init_ca(str(tmp_path / name), TD)
    return str(tmp_path / "ca1"), str(tmp_path / "ca2")


def test_issuing_over_a_world_readable_key_leaves_it_0600(cas, tmp_path):
    out = tmp_path / "svid"
    out.mkdir()
    (out / "svid.key").write_text("old")
    os.chmod(out / "svid.key", 0o644)
    issue_svid(cas[0], f"spiffe://{TD}/node/a", str(out))
    assert oct(os.stat(out / "svid.key").st_mode & 0o777) == "0o600"
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]
    load_svid_dir(str(out))


async def test_identity_dir_is_reloaded_when_its_files_change(cas, tmp_path):
    directory = issue_svid(cas[0], f"spiffe://{TD}/node/a", str(tmp_path / "a"))
    source = FileIdentity(directory, poll_s=3600)  # the test drives check() itself
    first = await source.start()
    seen = []
    source.on_update.append(seen.append)
    try:
        assert not source.check()  # nothing changed
        # half a renewal (a new key, the old certificate): refused, the old SVID stays
        other = issue_svid(cas[0], f"spiffe://{TD}/node/a", str(tmp_path / "b"))
        os.replace(os.path.join(other, "svid.key"), os.path.join(directory, "svid.key"))
        assert not source.check() and source.svid is first and not seen
        # the rest of it arrives: taken
        os.replace(os.path.join(other, "svid.pem"), os.path.join(directory, "svid.pem"))
        assert source.check()
        assert seen == [source.svid] and source.svid.chain[0] != first.chain[0]
    finally:
        source.close()


async def _handshake(listener: ssl.SSLContext, client: ssl.SSLContext) -> str | None:
    """The client's SPIFFE ID as the listener saw it, or None if the handshake failed."""
    seen: dict[str, str] = {}

    async def on_client(reader, writer):
        seen["peer"] = str(peer_spiffe_id(writer.get_extra_info("ssl_object")))
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0, ssl=listener)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        data = await reader.read(2)
        writer.close()
        return seen.get("peer") if data == b"ok" else None
    except (ssl.SSLError, ConnectionError):
        return None
    finally:
        server.close()
        await server.wait_closed()


async def test_a_ca_removed_from_the_bundle_is_trusted_by_no_later_handshake(cas, tmp_path):
    def svid(ca: str, name: str, bundle_from: tuple[str, ...]):
        loaded = load_svid_dir(issue_svid(ca, f"spiffe://{TD}/node/{name}",
                                          str(tmp_path / name)))
        bundle = tuple(c for d in bundle_from
                       for c in load_svid_dir(issue_svid(d, f"spiffe://{TD}/x",
                                                         str(tmp_path / f"x{len(d)}"))).bundle)
        return dataclasses.replace(loaded, bundle=bundle)

    server = svid(cas[0], "server", cas)                 # trusts both CAs
    old_ca_client = TlsContexts(svid(cas[1], "old", cas))
    new_ca_client = TlsContexts(svid(cas[0], "new", cas))
    tls = TlsContexts(server)
    assert await _handshake(tls.listener, old_ca_client.client()) == f"spiffe://{TD}/node/old"
    # the bundle loses CA 2: the same listener refuses its SVIDs from now on
    assert tls.update(dataclasses.replace(server, bundle=server.bundle[:1]))
    assert await _handshake(tls.listener, old_ca_client.client()) is None
    assert await _handshake(tls.listener, new_ca_client.client()) == f"spiffe://{TD}/node/new"
    # adding a CA is not a removal
    assert not tls.update(server)


async def test_a_call_reaches_only_the_expected_peer(cas, tmp_path):
    server = TlsContexts(load_svid_dir(issue_svid(cas[0], f"spiffe://{TD}/node/b",
                                                  str(tmp_path / "b"))))
    client = TlsContexts(load_svid_dir(issue_svid(cas[0], f"spiffe://{TD}/node/a",
                                                  str(tmp_path / "a"))))
    assert await _handshake(server.listener, client.client(f"spiffe://{TD}/node/b"))
    assert await _handshake(server.listener, client.client(f"spiffe://{TD}/node/c")) is None
