import asyncio
import datetime as dt
import os
import ssl

import pytest

from nsmd.cli.main import main
from nsmd.errors import NotFound, ValidationError
from nsmd.identity.ca import init_ca, issue_svid
from nsmd.identity.svid import IdentityError, load_svid_dir, verify_chain
from nsmd.identity.tls import PeerPolicy, make_context, peer_spiffe_id


@pytest.fixture
def domain(tmp_path):
    state = str(tmp_path / "ca-state")
    init_ca(state, "example.org")
    return state


def test_issue_and_load_a_verified_svid(domain, tmp_path):
    out = issue_svid(domain, "spiffe://example.org/node/a", str(tmp_path / "a"))
    svid = load_svid_dir(out)
    assert str(svid.spiffe_id) == "spiffe://example.org/node/a"
    assert oct(os.stat(os.path.join(out, "svid.key")).st_mode & 0o777) == "0o600"
    assert svid.not_after > dt.datetime.now(dt.UTC)


def test_ca_refuses_foreign_ids_and_a_second_init(domain, tmp_path):
    with pytest.raises(ValidationError, match="trust domain example.org"):
        issue_svid(domain, "spiffe://other.org/x", str(tmp_path / "x"))
    with pytest.raises(ValidationError, match="SPIFFE ID"):
        issue_svid(domain, "https://example.org/x", str(tmp_path / "x"))
    with pytest.raises(ValidationError, match="already holds a CA"):
        init_ca(domain, "example.org")
    with pytest.raises(NotFound, match="nsmd ca init"):
        issue_svid(str(tmp_path / "none"), "spiffe://example.org/x", str(tmp_path / "x"))


def test_chains_from_another_ca_or_expired_are_refused(domain, tmp_path):
    other = str(tmp_path / "other")
    init_ca(other, "example.org")  # same name, different keys: an impostor
    fake = load_svid_dir(issue_svid(other, "spiffe://example.org/node/a", str(tmp_path / "f")))
    real = load_svid_dir(issue_svid(domain, "spiffe://example.org/node/b", str(tmp_path / "r")))
    with pytest.raises(IdentityError, match="not trusted"):
        verify_chain(fake.chain, real.bundle)
    later = real.not_after + dt.timedelta(days=1)   # whatever the default lifetime
    with pytest.raises(IdentityError, match="not trusted"):
        verify_chain(real.chain, real.bundle, at=later)


def test_a_mismatched_key_is_refused(domain, tmp_path):
    a = issue_svid(domain, "spiffe://example.org/a", str(tmp_path / "a"))
    issue_svid(domain, "spiffe://example.org/b", str(tmp_path / "b"))
    os.replace(os.path.join(tmp_path, "b", "svid.key"), os.path.join(a, "svid.key"))
    with pytest.raises(IdentityError, match="does not belong"):
        load_svid_dir(a)


async def _handshake(server_svid, client_svid, policy_server, policy_client):
    seen = {}

    async def on_client(reader, writer):
        seen["peer"] = str(peer_spiffe_id(writer.get_extra_info("ssl_object")))
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(
        on_client, "127.0.0.1", 0, ssl=make_context(server_svid, policy_server, server=True))
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=make_context(client_svid, policy_client, server=False))
        data = await reader.read(2)
        writer.close()
        return data, seen.get("peer")
    finally:
        server.close()
        await server.wait_closed()


async def test_mutual_tls_names_the_peer_and_refuses_strangers(domain, tmp_path):
    a = load_svid_dir(issue_svid(domain, "spiffe://example.org/node/a", str(tmp_path / "a")))
    b = load_svid_dir(issue_svid(domain, "spiffe://example.org/node/b", str(tmp_path / "b")))
    policy = PeerPolicy("example.org")
    assert await _handshake(a, b, policy, policy) == (b"ok", "spiffe://example.org/node/b")

    other = str(tmp_path / "other")
    init_ca(other, "example.org")
    stranger = load_svid_dir(issue_svid(other, "spiffe://example.org/node/b",
                                        str(tmp_path / "s")))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await _handshake(a, stranger, policy, policy)

    # a server whose policy does not list the client: TLS 1.3 lets the client finish its
    # side first, but the server's handshake fails, so no request is ever served
    only_c = PeerPolicy("example.org", frozenset({"spiffe://example.org/node/c"}))
    try:
        outcome = await _handshake(a, b, only_c, policy)
    except (ssl.SSLError, ConnectionError):
        outcome = (b"", None)
    assert outcome == (b"", None)
    # and a client whose policy does not list the server refuses it at once
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await _handshake(a, b, policy, only_c)


def test_cli_creates_a_trust_domain(tmp_path, capsys):
    state, out = str(tmp_path / "s"), str(tmp_path / "o")
    assert main(["ca", "init", "--state-dir", state, "--trust-domain", "example.org"]) == 0
    assert main(["ca", "issue", "spiffe://example.org/n1", "--state-dir", state,
                 "--out", out]) == 0
    assert str(load_svid_dir(out).spiffe_id) == "spiffe://example.org/n1"
    assert main(["ca", "issue", "not-an-id", "--state-dir", state, "--out", out]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "spiffe_id" in line
