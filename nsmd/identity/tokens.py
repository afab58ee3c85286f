"""Path tokens: ES256 JWTs that each hop signs for its path segment with its SVID key.

NSM's model (sdk: pkg/tools/spiffejwt, common/updatetoken): `sub` is the signer's SPIFFE
ID, `aud` the next hop's, `exp` the token's end, never later than the SVID's own expiry.
Signing, decoding and signature checks go through PyJWT (its JWS layer for decoding, which
parses a token once); the claims are judged here, on the daemon's clock (so expiry is
checked on the same clock that armed the timers), never on PyJWT's wall clock.

The first token of a path (the client's segment, signed by the client's daemon) carries
its signer's certificate chain in the `x5c` header (RFC 7515 4.1.6): any later hop can
check who began the path against its trust bundle, so a policy on the path's origin means
what it says. The other hops' tokens do not (each is checked by the next hop, which holds
the signer's certificate from mTLS), which keeps paths short.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from collections.abc import Callable

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.api_jws import PyJWS

from nsmd import defaults
from nsmd.identity.svid import Svid

ALGORITHM = "ES256"
MAX_CHAIN = 4  # certificates an x5c header may carry (a leaf and its intermediates)
_JWS = PyJWS(algorithms=[ALGORITHM])  # JWS layer only: claims are checked here, not by PyJWT


class TokenError(ValueError):
    """A token that does not decode as an ES256 JWT with sub, aud and exp."""


class SignatureError(TokenError):
    """A well-formed token whose signature does not verify under the key given."""


@dataclasses.dataclass(frozen=True, slots=True)
class Claims:
    sub: str
    aud: str
    exp: float


def sign(svid: Svid, aud: str, now: float, lifetime_s: float,
         with_chain: bool = False) -> tuple[str, float]:
    """A token from `svid` for audience `aud`: (the JWT, its expiry in epoch seconds);
    `with_chain`: the SVID's certificate chain in its x5c header (a path's first token)."""
    exp = min(now + lifetime_s, svid.not_after.timestamp())
    return sign_claims(svid, {"aud": aud, "exp": exp, "iat": now}, with_chain), exp


def sign_claims(svid: Svid, claims: dict, with_chain: bool = True) -> str:
    """A JWT of `claims` (sub added: the SVID's ID), signed with the SVID's key."""
    headers = {"x5c": [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode()
                       for c in svid.chain]} if with_chain else None
    return jwt.encode({"sub": str(svid.spiffe_id), **claims}, svid.key, algorithm=ALGORITHM,
                      headers=headers)


# what a trust check makes of an x5c header: the leaf's SPIFFE ID and public key
Trusted = tuple[str, ec.EllipticCurvePublicKey]


def verify_chained(token: str, trust: Callable[[tuple[str, ...]], Trusted]) -> Claims:
    """The claims of a token whose x5c chain `trust` accepts (it gets the header's
    certificates, base64 DER as sent, and returns the leaf's SPIFFE ID and key, or raises),
    signed by the leaf's key, with that SPIFFE ID as `sub`."""
    return _claims(verify_chained_payload(token, trust)[1])


def verify_chained_payload(token: str, trust: Callable[[tuple[str, ...]], Trusted],
                           ) -> tuple[tuple[str, ...], bytes]:
    """(the x5c chain, the raw payload) of a token that verify_chained would accept."""
    try:
        x5c = _JWS.get_unverified_header(token).get("x5c")
    except jwt.PyJWTError as err:
        raise TokenError(f"not a JWT ({err})") from None
    if not isinstance(x5c, list) or not 0 < len(x5c) <= MAX_CHAIN or \
            not all(isinstance(c, str) for c in x5c):
        raise TokenError(f"no x5c header with 1 to {MAX_CHAIN} certificates")
    spiffe_id, key = trust(tuple(x5c))
    payload = _verified_payload(token, key)
    claims = _claims(payload)
    if claims.sub != spiffe_id:
        raise TokenError(f"it is signed as {claims.sub} by the certificate of {spiffe_id}")
    return tuple(x5c), payload


def chain_of(x5c: tuple[str, ...]) -> list[x509.Certificate]:
    """The certificates of an x5c header (base64 DER, leaf first)."""
    try:
        return [x509.load_der_x509_certificate(base64.b64decode(c, validate=True))
                for c in x5c]
    except (ValueError, binascii.Error):
        raise TokenError("its x5c header holds no DER certificates") from None


def read(token: str) -> Claims:
    """The claims of an ES256 token, signature not checked (other hops' tokens)."""
    try:
        parts = _JWS.decode_complete(token, options={"verify_signature": False})
    except jwt.PyJWTError as err:
        raise TokenError(f"not a JWT ({err})") from None
    if parts["header"].get("alg") != ALGORITHM:
        raise TokenError(f"not an {ALGORITHM} token")
    return _claims(parts["payload"])


def verify(token: str, key: ec.EllipticCurvePublicKey) -> Claims:
    """The claims of a token whose ES256 signature verifies under `key`."""
    return _claims(_verified_payload(token, key))


def _verified_payload(token: str, key: ec.EllipticCurvePublicKey) -> bytes:
    try:
        parts = _JWS.decode_complete(token, key=key, algorithms=[ALGORITHM])
    except jwt.InvalidSignatureError:
        raise SignatureError("its signature does not verify with the caller's "
                             "certificate key") from None
    except jwt.PyJWTError as err:
        raise TokenError(f"not an {ALGORITHM} JWT ({err})") from None
    return parts["payload"]


def _claims(payload: bytes) -> Claims:
    try:
        raw = json.loads(payload)
    except ValueError:
        raw = None
    if not isinstance(raw, dict):
        raise TokenError("its payload is not a JSON object")
    sub, aud, exp = raw.get("sub"), raw.get("aud"), raw.get("exp")
    if isinstance(aud, list) and len(aud) == 1:  # JWT allows a one-element audience list
        aud = aud[0]
    if not isinstance(sub, str) or not isinstance(aud, str) or isinstance(exp, bool) \
            or not isinstance(exp, int | float):
        raise TokenError("claims sub, aud (strings) and exp (a number) are required")
    return Claims(sub, aud, float(exp))


class Signer:
    """Signs tokens with this daemon's current SVID (it rotates) for `lifetime_s`."""

    def __init__(self, svid: Callable[[], Svid], lifetime_s: float = defaults.TOKEN_LIFETIME_S):
        self._svid = svid
        self.lifetime_s = lifetime_s

    @property
    def spiffe_id(self) -> str:
        return str(self._svid().spiffe_id)

    def sign(self, aud: str, now: float, with_chain: bool = False) -> tuple[str, float]:
        return sign(self._svid(), aud, now, self.lifetime_s, with_chain)

    def sign_claims(self, claims: dict) -> str:
        """`claims` signed, with this SVID's chain (x5c): checkable by anyone holding the
        trust bundle, whoever carried it (sealed calls through a rendezvous)."""
        return sign_claims(self._svid(), claims)
