"""A development trust domain: a CA and the X.509 SVIDs it signs (`nsmd ca init|issue`),
and what an operator does with an SVID directory (`nsmd ca print|verify|renew`).

For first runs and tests, so nothing needs SPIRE. Keys are EC P-256, files 0600. The CA
signs leaves with the SPIFFE ID as the only URI SAN and both TLS usages, as SPIRE does.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from spiffe import SpiffeId, TrustDomain

from nsmd.errors import NotFound, ValidationError
from nsmd.identity.svid import (
    BUNDLE,
    SVID_CERT,
    SVID_KEY,
    IdentityError,
    load_svid_dir,
    verify_chain,
)

CA_DIR = "ca"
CA_CERT, CA_KEY = "ca.pem", "ca.key"
CA_LIFETIME = dt.timedelta(days=3650)
DEFAULT_SVID_LIFETIME = dt.timedelta(days=90)   # development; production rotates (SPIRE)


def parse_spiffe_id(value: str, where: str = "spiffe_id") -> SpiffeId:
    try:
        return SpiffeId(value)
    except Exception as err:  # py-spiffe raises its own error types
        raise ValidationError(where, "a SPIFFE ID like spiffe://example.org/node/a", value,
                              detail=f"{where}: {err}") from None


def init_ca(state_dir: str, trust_domain: str) -> str:
    """Creates the CA of `trust_domain` under state_dir/ca; refuses to overwrite one."""
    try:
        td = TrustDomain(trust_domain)
    except Exception as err:
        raise ValidationError("trust-domain", "a trust domain name like example.org",
                              trust_domain, detail=f"trust-domain: {err}") from None
    directory = os.path.join(state_dir, CA_DIR)
    if os.path.exists(os.path.join(directory, CA_CERT)):
        raise ValidationError("state-dir", "a state directory without a CA",
                              detail=f"{directory} already holds a CA; remove it first")
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nsmd"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"nsmd CA {td.name}")])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=True), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"spiffe://{td.name}")]), critical=False)
            .sign(key, hashes.SHA256()))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    _write(os.path.join(directory, CA_KEY), _key_pem(key))
    _write(os.path.join(directory, CA_CERT), cert.public_bytes(serialization.Encoding.PEM))
    return directory


def issue_svid(state_dir: str, spiffe_id: str, out_dir: str,
               lifetime: dt.timedelta = DEFAULT_SVID_LIFETIME) -> str:
    """Writes svid.pem, svid.key and bundle.pem for `spiffe_id` into out_dir."""
    sid = parse_spiffe_id(spiffe_id)
    ca_cert, ca_key = load_ca(state_dir)
    ca_domain = _trust_domain_of(ca_cert)
    if sid.trust_domain.name != ca_domain:
        raise ValidationError("spiffe_id", f"an ID in the CA's trust domain {ca_domain}",
                              spiffe_id)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nsmd")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + lifetime)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(str(sid))]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    os.makedirs(out_dir, mode=0o700, exist_ok=True)
    _write(os.path.join(out_dir, SVID_KEY), _key_pem(key))
    _write(os.path.join(out_dir, SVID_CERT), cert.public_bytes(serialization.Encoding.PEM))
    _write(os.path.join(out_dir, BUNDLE), ca_cert.public_bytes(serialization.Encoding.PEM))
    return out_dir


def describe_svid(directory: str) -> list[str]:
    """What `nsmd ca print` shows of an SVID directory, a line a fact."""

    svid = load_svid_dir(directory)
    leaf, left = svid.chain[0], svid.not_after - _now()
    return [f"spiffe id   {svid.spiffe_id}",
            f"serial      {leaf.serial_number:x}",
            f"valid       {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} to "
            f"{leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC ({_span(left)} left)",
            f"issuer      {leaf.issuer.rfc4514_string()}",
            *(f"bundle CA   {c.subject.rfc4514_string()}, until "
              f"{c.not_valid_after_utc:%Y-%m-%d}" for c in svid.bundle)]


def verify_svid(directory: str) -> str:
    """One line if the SVID is valid now and chains to its bundle; IdentityError if not."""

    try:
        svid = load_svid_dir(directory)
        verify_chain(svid.chain, svid.bundle)
    except IdentityError as err:
        raise ValidationError("svid", "a certificate valid now, issued by the bundle's CA",
                              detail=f"{directory}: {err}") from None
    return f"{svid.spiffe_id}: valid, chains to the bundle, {_span(svid.not_after - _now())} left"


def renew_svid(state_dir: str, directory: str,
               lifetime: dt.timedelta = DEFAULT_SVID_LIFETIME) -> str:
    """A new SVID for the same SPIFFE ID into `directory` (a daemon using it reloads it)."""

    return issue_svid(state_dir, str(load_svid_dir(directory).spiffe_id), directory, lifetime)


def _span(delta: dt.timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours / 24:.1f} days" if abs(hours) >= 48 else f"{hours:.1f} h"


def load_ca(state_dir: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    directory = os.path.join(state_dir, CA_DIR)
    try:
        with open(os.path.join(directory, CA_CERT), "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        with open(os.path.join(directory, CA_KEY), "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
    except FileNotFoundError:
        raise NotFound(f"no CA in {directory}: run `nsmd ca init` first") from None
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return cert, key


def _trust_domain_of(cert: x509.Certificate) -> str:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return SpiffeId(san.get_values_for_type(x509.UniformResourceIdentifier)[0]).trust_domain.name


def _usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=cert_sign, crl_sign=cert_sign, encipher_only=False,
                         decipher_only=False)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path: str, data: bytes) -> None:
    """Writes `path` whole or not at all, mode 0600 whatever was there before: a temporary
    file in the same directory, synced, then renamed over it (readers, including a daemon
    polling its identity directory, see the old file or the new one, never half)."""
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
