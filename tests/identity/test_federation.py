"""SPIFFE federation: peers of a federated trust domain pass mutual TLS, others do not,
and one domain's CA cannot vouch for another domain's IDs."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from nsmd.errors import ValidationError
from nsmd.identity.ca import init_ca, issue_svid, load_ca
from nsmd.identity.federation import load_bundles, parse_federate
from nsmd.identity.svid import load_svid_dir
from nsmd.identity.tls import TlsContexts
from tests.identity.test_rotation import _handshake


@pytest.fixture
def domains(tmp_path):
    cas = {td: init_ca(str(tmp_path / f"ca-{td}"), td) and str(tmp_path / f"ca-{td}")
           for td in ("a.test", "b.test", "c.test")}
    svids = {td: load_svid_dir(issue_svid(ca, f"spiffe://{td}/node/1", str(tmp_path / td)))
             for td, ca in cas.items()}
    bundles = {}
    for td, svid in svids.items():
        path = tmp_path / f"{td}.bundle.pem"
        path.write_text(svid.bundle_pem())
        bundles[td] = str(path)
    return cas, svids, bundles


async def test_a_federated_domain_passes_and_others_do_not(domains):
    _, svids, bundles = domains
    a = TlsContexts(svids["a.test"], load_bundles(f"b.test={bundles['b.test']}"))
    b = TlsContexts(svids["b.test"], load_bundles(f"a.test={bundles['a.test']}"))
    c = TlsContexts(svids["c.test"], load_bundles(f"a.test={bundles['a.test']}"))
    assert await _handshake(a.listener, b.client()) == "spiffe://b.test/node/1"
    assert await _handshake(b.listener, a.client("spiffe://b.test/node/1"))
    assert await _handshake(a.listener, c.client()) is None  # c is not federated with a
    plain = TlsContexts(svids["a.test"])  # without --federate: own domain only
    assert await _handshake(plain.listener, b.client()) is None


async def test_one_domains_ca_cannot_vouch_for_another_domains_ids(domains, tmp_path):
    cas, svids, bundles = domains
    ca_cert, ca_key = load_ca(cas["b.test"])
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    forged = (x509.CertificateBuilder().subject_name(x509.Name([]))
              .issuer_name(ca_cert.subject).public_key(key.public_key())
              .serial_number(99).not_valid_before(now - dt.timedelta(minutes=1))
              .not_valid_after(now + dt.timedelta(hours=1))
              .add_extension(x509.SubjectAlternativeName(  # claims to be in a.test
                  [x509.UniformResourceIdentifier("spiffe://a.test/node/evil")]), critical=True)
              .sign(ca_key, hashes.SHA256()))
    impostor = dataclasses.replace(svids["b.test"], chain=(forged,), key=key)
    a = TlsContexts(svids["a.test"], load_bundles(f"b.test={bundles['b.test']}"))
    evil = TlsContexts(impostor, load_bundles(f"a.test={bundles['a.test']}"))
    assert await _handshake(a.listener, evil.client()) is None


def test_federate_option_errors_name_it(tmp_path):
    assert parse_federate("a.test=/x, b.test=/y") == [("a.test", "/x"), ("b.test", "/y")]
    for bad in ("a.test", "=/x", "Not A Domain!=/x"):
        with pytest.raises(ValidationError, match="federate"):
            parse_federate(bad)
    with pytest.raises(ValidationError, match="federate: a.test=/missing"):
        load_bundles("a.test=/missing")


async def test_federated_bundles_from_a_workload_api(domains, tmp_path):
    """A Workload API that federates a.test with b.test: b's peers pass once the bundle
    arrives (with the next update), without any --federate file."""
    import asyncio

    from nsmd.identity.identity import Identity
    from nsmd.identity.workload import WorkloadIdentity
    from nsmd.testing.workload_api import WorkloadApiServer

    cas, svids, bundles = domains
    api = WorkloadApiServer(cas["a.test"], "spiffe://a.test/node/wl",
                            str(tmp_path / "wl.sock"), str(tmp_path)).start()
    identity = Identity(WorkloadIdentity(api.url))
    try:
        await identity.start()
        b = TlsContexts(svids["b.test"], load_bundles(f"a.test={bundles['a.test']}"))
        assert await _handshake(identity.tls.listener, b.client()) is None  # not yet
        api.federate("b.test", list(svids["b.test"].bundle))
        for _ in range(50):
            await asyncio.sleep(0.1)
            if "b.test" in identity.trust_domains:
                break
        assert identity.trust_domains == {"a.test", "b.test"}
        assert await _handshake(identity.tls.listener, b.client()) == "spiffe://b.test/node/1"
    finally:
        identity.close()
        api.stop()
