"""Sealed peer calls: a call and its reply that prove their sender end to end, whoever
carries them (the rendezvous daemon between two daemons behind NAT).

Each is an ES256 JWT signed with the sender's SVID and carrying its certificate chain
(x5c), so the receiver checks it against its trust bundle exactly as mTLS would have:
`sub` is the sender, `aud` the one daemon meant to act on it, `exp` a short life, `jti`
a fresh id (a call seen before is refused; a reply must name its call's). The body
travels inside, msgpack in base64: a carrier can drop or delay a call, never read its
purpose into something else, forge one, or replay it.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

import msgpack
from cryptography import x509

from nsmd.errors import PermissionDenied
from nsmd.identity import tokens

LIFETIME_S = 30.0
MAX_SEEN = 65536    # call ids remembered until they expire (a replay inside its life)


def seal(signer: tokens.Signer, to: str, fields: dict[str, Any], body: Any,
         jti: str = "", now: float | None = None) -> tuple[str, str]:
    """(`fields` and `body` for daemon `to`, signed by `signer`; its id). jti: a reply's
    call id (a call gets a new one)."""
    now = time.time() if now is None else now
    jti = jti or secrets.token_hex(16)
    return signer.sign_claims({
        "aud": to, "iat": now, "exp": now + LIFETIME_S, "jti": jti, **fields,
        "body": base64.b64encode(msgpack.packb(body)).decode()}), jti


class Opened:
    """A verified envelope: its sender, the sender's leaf certificate and its claims."""

    def __init__(self, sender: str, certificate: x509.Certificate, claims: dict):
        self.sender = sender
        self.certificate = certificate
        self.claims = claims

    @property
    def jti(self) -> str:
        return self.claims["jti"]

    def body(self) -> Any:
        try:
            return msgpack.unpackb(base64.b64decode(self.claims["body"], validate=True))
        except (ValueError, binascii.Error, msgpack.UnpackException) as err:
            raise PermissionDenied("sealed_call", f"its body does not decode ({err})") \
                from None


class Opener:
    """Checks envelopes addressed to this daemon; remembers call ids while they live."""

    def __init__(self, trust: Callable[[tuple[str, ...]], tokens.Trusted],
                 own_id: Callable[[], str]):
        self.trust = trust
        self.own_id = own_id
        self._seen: dict[str, float] = {}

    def open(self, envelope: Any, expect_sender: str = "", reply_to: str = "",
             now: float | None = None) -> Opened:
        """The envelope, verified: for us, alive, from `expect_sender` if given; a reply
        (reply_to: its call's id) must carry that id, a call must carry a new one."""
        now = time.time() if now is None else now
        if not isinstance(envelope, str):
            raise PermissionDenied("sealed_call", "no envelope")
        try:
            x5c, payload = tokens.verify_chained_payload(envelope, self.trust)
            claims = json.loads(payload)
        except (tokens.TokenError, ValueError) as err:
            raise PermissionDenied("sealed_call", f"the envelope does not verify ({err})") \
                from None
        except Exception as err:  # the trust check's IdentityError: not of our bundle
            raise PermissionDenied("sealed_call", f"the envelope's signer is not trusted "
                                   f"({err})") from None
        sender, jti = claims.get("sub"), claims.get("jti")
        exp, iat = claims.get("exp"), claims.get("iat")
        if claims.get("aud") != self.own_id():
            raise PermissionDenied("sealed_call", f"the envelope is for {claims.get('aud')}, "
                                   "not this daemon")
        if not isinstance(jti, str) or not isinstance(claims.get("body"), str) or \
                not isinstance(exp, int | float) or not isinstance(iat, int | float):
            raise PermissionDenied("sealed_call", "the envelope lacks jti, iat, exp or body")
        if not iat - LIFETIME_S <= now < exp or exp - iat > LIFETIME_S:
            raise PermissionDenied("sealed_call", "the envelope has expired (or its clock is "
                                   "far off ours)")
        if expect_sender and sender != expect_sender:
            raise PermissionDenied("sealed_call", f"the envelope is from {sender}, not "
                                   f"{expect_sender}")
        if reply_to:
            if jti != reply_to:
                raise PermissionDenied("sealed_call", "the reply answers another call")
        else:
            self._remember(jti, exp, now)
        return Opened(sender, tokens.chain_of(x5c)[0], claims)

    def _remember(self, jti: str, exp: float, now: float) -> None:
        if jti in self._seen:
            raise PermissionDenied("sealed_call", "the call was delivered before (a replay)")
        if len(self._seen) >= MAX_SEEN:
            self._seen = {k: v for k, v in self._seen.items() if v > now}
            if len(self._seen) >= MAX_SEEN:
                raise PermissionDenied("sealed_call", "too many calls in flight")
        self._seen[jti] = exp
