"""SPIFFE federation: the trust bundles of other trust domains (`--federate TD=BUNDLE.pem`).

A peer of a federated trust domain passes mutual TLS only with a certificate issued by a
CA of *its own* trust domain's bundle (checked after OpenSSL verified the chain against
all bundles together, which alone would let one domain's CA vouch for another's IDs);
what it may then do is up to the policies.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from spiffe import TrustDomain

from nsmd.errors import ValidationError

Bundles = dict[str, tuple[x509.Certificate, ...]]


def parse_federate(value: str) -> list[tuple[str, str]]:
    """"TD=PATH,TD=PATH" (the repeated --federate options, joined) -> [(TD, PATH)]."""
    pairs = []
    for item in (i.strip() for i in value.split(",")):
        if not item:
            continue
        td, sep, path = item.partition("=")
        if not sep or not td or not path:
            raise ValidationError("federate", "TRUST_DOMAIN=BUNDLE.pem", item)
        try:
            TrustDomain(td)
        except Exception:
            raise ValidationError("federate", "a trust domain name like example.org", td,
                                  detail=f"federate: {td!r} is not a trust domain name") from None
        pairs.append((td, path))
    return pairs


def load_bundles(value: str) -> Bundles:
    """The federated bundles named by `value`; errors name the option and the file."""
    bundles: Bundles = {}
    for td, path in parse_federate(value):
        try:
            with open(path, "rb") as f:
                certs = tuple(x509.load_pem_x509_certificates(f.read()))
        except (OSError, ValueError) as err:
            raise ValidationError("federate", "a readable PEM bundle", path,
                                  detail=f"federate: {td}={path}: {err}") from None
        bundles[td] = bundles.get(td, ()) + certs
    return bundles


def issued_by_bundle(leaf: x509.Certificate, bundle: tuple[x509.Certificate, ...]) -> bool:
    """Whether `leaf` was signed by one of `bundle`'s CAs."""
    for ca in bundle:
        try:
            leaf.verify_directly_issued_by(ca)
            return True
        except (ValueError, TypeError, InvalidSignature):  # another issuer or key type
            continue
    return False
