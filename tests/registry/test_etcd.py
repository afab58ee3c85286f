"""The etcd registry against a real etcd (Debian's etcd-server) on loopback: ownership in
transactions, one lease per daemon, watches resumed after an etcd restart, compaction,
vL3 subnet claims. The three-daemon bed is in tests/integration/test_etcd.py."""

from __future__ import annotations

import asyncio
import os
import shutil

import pytest

from nsmd.clock import SystemClock
from nsmd.config import etcd_members as parse_url
from nsmd.errors import Conflict, NotFound, PermissionDenied
from nsmd.model import NetworkService, NetworkServiceEndpoint, ServiceLabels
from nsmd.registry.etcd import EtcdRegistry, EtcdTls, RegistryUnavailable
from nsmd.testing.sandbox import EtcdServer
from nsmd.vl3 import subnets

pytestmark = pytest.mark.netns  # needs root and etcd; must run in CI

A, B = "spiffe://td/node/a", "spiffe://td/node/b"


@pytest.fixture
def etcd(tmp_path):
    assert shutil.which("etcd"), "etcd is missing: run scripts/setup"
    server = EtcdServer(str(tmp_path / "etcd")).start()
    yield server
    server.stop()


@pytest.fixture
async def daemons(etcd):
    made = []

    async def make(self_id: str, ttl: float = 60.0) -> EtcdRegistry:
        reg = EtcdRegistry(etcd.url, SystemClock(), ttl, self_id)
        await reg.start()
        made.append(reg)
        return reg

    yield make
    for reg in made:
        reg.close()
    await asyncio.sleep(0.05)


async def until(predicate, timeout=10.0):
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


def nse(name, service="svc", subnet=""):
    labels = {subnets.SUBNET_LABEL: subnet} if subnet else {}
    return NetworkServiceEndpoint(name=name, network_service_names=[service],
                                  network_service_labels={service: ServiceLabels(labels)})


def test_urls():
    assert parse_url("etcd://192.0.2.1:2379,192.0.2.2:2379") == [("192.0.2.1", 2379),
                                                                 ("192.0.2.2", 2379)]
    with pytest.raises(Exception, match="etcd://HOST:PORT"):
        parse_url("etcd://host")


async def test_every_daemon_sees_every_write_and_names_keep_their_owner(daemons):
    a, b = await daemons(A), await daemons(B)
    await a.register_service(NetworkService(name="svc"))
    await a.register_endpoint(nse("e1"))
    await until(lambda: "e1" in b.endpoints and "svc" in b.services)
    assert b.endpoints["e1"].path_ids == [A]
    with pytest.raises(PermissionDenied, match="owned by spiffe://td/node/a"):
        await b.register_endpoint(nse("e1", "other"))
    with pytest.raises(PermissionDenied):
        await b.unregister_service("svc")
    with pytest.raises(PermissionDenied):  # a peer writing through b as itself: still A's
        await b.register_endpoint(nse("e1"), owner=B)
    assert b.endpoints["e1"].network_service_names == ["svc"]  # refused: nothing changed
    await a.unregister_endpoint("e1")
    await until(lambda: "e1" not in b.endpoints)
    with pytest.raises(NotFound):
        await a.unregister_endpoint("e1")


async def test_keeping_an_endpoint_alive_costs_no_write(daemons, etcd):
    a = await daemons(A)
    first = await a.register_endpoint(nse("e1"))
    revision = (await a._get(b"/nsmd/endpoints/e1")).mod_revision
    for _ in range(5):
        again = await a.register_endpoint(nse("e1"))
    assert (await a._get(b"/nsmd/endpoints/e1")).mod_revision == revision
    assert again.expiration_time >= first.expiration_time


async def test_a_dead_daemons_endpoints_expire_with_its_lease(daemons):
    a, b = await daemons(A, ttl=2), await daemons(B)
    await a.register_endpoint(nse("e1"))
    await until(lambda: "e1" in b.endpoints)
    await asyncio.sleep(3)
    assert "e1" in b.endpoints  # kept alive by a's keepalives, without writes
    a.close()  # a dies: no more keepalives
    await until(lambda: "e1" not in b.endpoints, timeout=8)


async def test_watches_resume_after_an_etcd_restart(daemons, etcd):
    a, b = await daemons(A), await daemons(B)
    await a.register_endpoint(nse("e1"))
    await until(lambda: "e1" in b.endpoints)
    etcd.stop()
    # after its deadline, saying why the watch broke
    with pytest.raises(RegistryUnavailable, match=r"registry etcd://.*no answer within 5 s "
                       r"\(last error: UNAVAILABLE"):
        await a.register_endpoint(nse("e2"))
    await asyncio.sleep(3)  # long enough for gRPC's default reconnect backoff to grow
    etcd.start()
    await a.register_endpoint(nse("e2"))  # at once: the call waits for the reconnect
    await until(lambda: "e2" in b.endpoints)  # b's watch resumed
    assert "e1" in b.endpoints  # nothing lost


async def test_a_compacted_history_reloads_the_mirror(daemons, etcd):
    a, b = await daemons(A), await daemons(B)
    b.close()  # b stops following ...
    for i in range(3):
        await a.register_endpoint(nse(f"e{i}"))
    await a.unregister_endpoint("e0")
    etcd.compact()  # ... and the history it would resume from is gone
    c = await daemons(B)
    c.revision = 1  # as if it had stopped at revision 1
    await c._load_snapshot()
    assert sorted(c.endpoints) == ["e1", "e2"]


async def test_vl3_subnets_are_claimed_once(daemons):
    a, b = await daemons(A), await daemons(B)
    results = await asyncio.gather(a.register_endpoint(nse("x", "vl3", "100.64.0.0/24")),
                                   b.register_endpoint(nse("y", "vl3", "100.64.0.0/24")),
                                   return_exceptions=True)
    assert sum(isinstance(r, Conflict) for r in results) == 1, results
    loser, lost, winner, won = (b, "y", a, "x") if isinstance(results[1], Conflict) else \
        (a, "x", b, "y")
    await loser.register_endpoint(nse(lost, "vl3", "100.64.1.0/24"))
    await until(lambda: won in loser.endpoints)
    with pytest.raises(Conflict, match=f"held by endpoint '{won}'"):
        await loser.register_endpoint(nse(lost, "vl3", "100.64.0.0/24"))
    await winner.unregister_endpoint(won)  # its claim goes with it
    await until(lambda: won not in loser.endpoints)
    await loser.register_endpoint(nse("z", "vl3", "100.64.0.0/24"))


def _tls_files(base) -> dict[str, str]:
    """A CA, an etcd server certificate for 127.0.0.1 and a client certificate."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test etcd CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(1).not_valid_before(now)
          .not_valid_after(now + dt.timedelta(hours=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    files = {"ca": str(base / "ca.pem")}
    (base / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for serial, who in ((2, "server"), (3, "client")):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, who)]))
                .issuer_name(ca_name).public_key(key.public_key()).serial_number(serial)
                .not_valid_before(now).not_valid_after(now + dt.timedelta(hours=1))
                .add_extension(x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
                .add_extension(x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                    critical=False)
                .sign(ca_key, hashes.SHA256()))
        (base / f"{who}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (base / f"{who}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        files[who] = str(base / f"{who}.pem")
        files[f"{who}_key"] = str(base / f"{who}.key")
    return files


async def test_mutual_tls_to_etcd(tmp_path):
    files = _tls_files(tmp_path)
    server = EtcdServer(str(tmp_path / "etcd"),
                        tls=(files["ca"], files["server"], files["server_key"])).start()
    try:
        reg = EtcdRegistry(server.url, SystemClock(), 60, A,
                           EtcdTls.files(files["ca"], files["client"], files["client_key"]))
        await reg.start()
        try:
            await reg.register_endpoint(nse("e1"))
            assert "e1" in reg.endpoints
        finally:
            reg.close()
        # without a certificate: refused, and said so
        plain = EtcdRegistry(server.url, SystemClock(), 60, A, start_timeout_s=1)
        await plain.start()
        try:
            assert not plain.lease and not plain.endpoints
            with pytest.raises(RegistryUnavailable, match="registry etcd://"):
                await plain.register_endpoint(nse("e2"))
        finally:
            plain.close()
    finally:
        server.stop()



async def test_etcd_knows_the_daemon_by_its_svid(tmp_path):
    """etcd trusts our trust domain's CA for clients; the daemon presents its SVID and
    checks etcd's server certificate against --registry-ca; a new SVID, a new channel."""
    from nsmd.identity.ca import init_ca, issue_svid
    from nsmd.identity.svid import load_svid_dir

    files = _tls_files(tmp_path)
    init_ca(str(tmp_path / "td"), "td")
    svid_dir = issue_svid(str(tmp_path / "td"), A, str(tmp_path / "svid"))
    svid = load_svid_dir(svid_dir)
    bundle = os.path.join(svid_dir, "bundle.pem")
    server = EtcdServer(str(tmp_path / "etcd"),
                        tls=(bundle, files["server"], files["server_key"]),
                        ctl=(files["ca"], os.path.join(svid_dir, "svid.pem"),
                             os.path.join(svid_dir, "svid.key"))).start()
    current = [svid]
    reg = EtcdRegistry(server.url, SystemClock(), 60, A, EtcdTls(
        files["ca"], lambda: (current[0].chain_pem(), current[0].key_pem()), from_svid=True))
    try:
        await reg.start()
        await reg.register_endpoint(nse("e1"))
        current[0] = load_svid_dir(issue_svid(str(tmp_path / "td"), A, str(tmp_path / "new")))
        reg.reconnect()
        await reg.register_endpoint(nse("e2"))
        assert {"e1", "e2"} <= set(reg.endpoints)
    finally:
        reg.close()
        server.stop()
