"""Path tokens: ES256 JWTs that each hop signs for its path segment with its SVID key.

NSM's model (sdk: pkg/tools/spiffejwt, common/updatetoken): `sub` is the signer's SPIFFE
ID, `aud` the next hop's, `exp` the token's end, never later than the SVID's own expiry.
Signing and decoding go through PyJWT; times come from the daemon's clock (so expiry is
checked on the same clock that armed the timers), never from PyJWT's wall clock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from nsmd.identity.svid import Svid

ALGORITHM = "ES256"
DEFAULT_LIFETIME_S = 600.0  # NSM_MAX_TOKEN_LIFETIME
# Claims PyJWT must not judge: we check exp on the daemon's clock and aud against the hop.
_NO_CLAIM_CHECKS: Any = {"verify_exp": False, "verify_aud": False, "verify_iat": False,
                    "verify_nbf": False}


class TokenError(ValueError):
    """A token that does not decode, or whose signature does not verify."""


@dataclasses.dataclass(frozen=True, slots=True)
class Claims:
    sub: str
    aud: str
    exp: float


def sign(svid: Svid, aud: str, now: float, lifetime_s: float) -> tuple[str, float]:
    """A token from `svid` for audience `aud`: (the JWT, its expiry in epoch seconds)."""
    exp = min(now + lifetime_s, svid.not_after.timestamp())
    token = jwt.encode({"sub": str(svid.spiffe_id), "aud": aud, "exp": exp, "iat": now},
                       svid.key, algorithm=ALGORITHM)
    return token, exp


def read(token: str) -> Claims:
    """The claims of an ES256 token, signature not checked (other hops' tokens)."""
    try:
        if jwt.get_unverified_header(token).get("alg") != ALGORITHM:
            raise TokenError(f"not an {ALGORITHM} token")
        claims = jwt.decode(token, options={"verify_signature": False, **_NO_CLAIM_CHECKS})
    except jwt.PyJWTError as err:
        raise TokenError(f"not a JWT ({err})") from None
    return _claims(claims)


def verify(token: str, key: ec.EllipticCurvePublicKey) -> Claims:
    """The claims of a token whose ES256 signature verifies under `key`."""
    try:
        claims = jwt.decode(token, key=key, algorithms=[ALGORITHM], options=_NO_CLAIM_CHECKS)
    except jwt.PyJWTError as err:
        raise TokenError(f"signature does not verify ({err})") from None
    return _claims(claims)


def _claims(raw: dict) -> Claims:
    sub, aud, exp = raw.get("sub"), raw.get("aud"), raw.get("exp")
    if isinstance(aud, list) and len(aud) == 1:  # JWT allows a one-element audience list
        aud = aud[0]
    if not isinstance(sub, str) or not isinstance(aud, str) or isinstance(exp, bool) \
            or not isinstance(exp, int | float):
        raise TokenError("claims sub, aud (strings) and exp (a number) are required")
    return Claims(sub, aud, float(exp))


class Signer:
    """Signs tokens with this daemon's current SVID (it rotates) for `lifetime_s`."""

    def __init__(self, svid: Callable[[], Svid], lifetime_s: float = DEFAULT_LIFETIME_S):
        self._svid = svid
        self.lifetime_s = lifetime_s

    @property
    def spiffe_id(self) -> str:
        return str(self._svid().spiffe_id)

    def sign(self, aud: str, now: float) -> tuple[str, float]:
        return sign(self._svid(), aud, now, self.lifetime_s)
