"""An X.509 SVID held in memory: certificate chain, key, trust bundle, and its checks.

py-spiffe loads SVIDs without checking who signed them, so every SVID we take (from files
or the Workload API) is verified here against the bundle: chain, validity, and a single
spiffe:// URI SAN (SPIFFE X509-SVID §4, §5).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from spiffe import SpiffeId

from nsmd.errors import NsmdError, ValidationError

SVID_CERT, SVID_KEY, BUNDLE = "svid.pem", "svid.key", "bundle.pem"  # an identity dir's files


class IdentityError(NsmdError):
    status = 401


@dataclasses.dataclass(frozen=True)
class Svid:
    spiffe_id: SpiffeId
    chain: tuple[x509.Certificate, ...]     # leaf first
    key: ec.EllipticCurvePrivateKey
    bundle: tuple[x509.Certificate, ...]    # trusted roots of our trust domain
    # other trust domains' roots the source federates with (a Workload API's federated
    # bundles); --federate files add to them
    federated: dict[str, tuple[x509.Certificate, ...]] = dataclasses.field(
        default_factory=dict)

    @property
    def not_after(self) -> dt.datetime:
        return self.chain[0].not_valid_after_utc

    def chain_pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.chain)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    def bundle_pem(self) -> str:
        return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in self.bundle)


def spiffe_id_of(cert: x509.Certificate) -> SpiffeId:
    """The one spiffe:// URI SAN of a leaf certificate."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise IdentityError("certificate has no subjectAltName, so no SPIFFE ID") from None
    uris = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier)
            if u.startswith("spiffe://")]
    if len(uris) != 1:
        raise IdentityError(f"certificate must carry exactly one SPIFFE ID, has {len(uris)}")
    return SpiffeId(uris[0])


def verify_chain(chain: list[x509.Certificate] | tuple[x509.Certificate, ...],
                 bundle: list[x509.Certificate] | tuple[x509.Certificate, ...],
                 at: dt.datetime | None = None) -> SpiffeId:
    """Checks that chain[0] is signed (via chain[1:]) by a root in `bundle` and is valid now;
    returns its SPIFFE ID. Raises IdentityError naming what is wrong."""
    if not chain:
        raise IdentityError("empty certificate chain")
    builder = PolicyBuilder().store(Store(list(bundle)))
    if at is not None:
        builder = builder.time(at)
    try:
        builder.build_client_verifier().verify(chain[0], list(chain[1:]))
    except VerificationError as err:
        raise IdentityError(f"certificate not trusted: {err}") from None
    return spiffe_id_of(chain[0])


def load_svid_dir(directory: str) -> Svid:
    """svid.pem (leaf first), svid.key and bundle.pem from `directory`, verified."""
    try:
        with open(os.path.join(directory, SVID_CERT), "rb") as f:
            chain = x509.load_pem_x509_certificates(f.read())
        with open(os.path.join(directory, SVID_KEY), "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
        with open(os.path.join(directory, BUNDLE), "rb") as f:
            bundle = x509.load_pem_x509_certificates(f.read())
    except FileNotFoundError as err:
        raise ValidationError("identity-dir", f"a directory with {SVID_CERT}, {SVID_KEY} and "
                              f"{BUNDLE}", detail=f"identity-dir: {err.filename} is missing"
                              ) from None
    except ValueError as err:
        raise ValidationError("identity-dir", "PEM certificates and a PEM key",
                              detail=f"identity-dir {directory}: {err}") from None
    return make_svid(chain, key, bundle)


def make_svid(chain, key, bundle) -> Svid:
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise IdentityError("the SVID key must be an EC key (ES256 tokens need P-256)")
    if key.public_key().public_numbers() != chain[0].public_key().public_numbers():
        raise IdentityError("the SVID key does not belong to the SVID certificate")
    spiffe_id = verify_chain(chain, bundle)
    return Svid(spiffe_id, tuple(chain), key, tuple(bundle))
