"""NSM's default token policies over a request's path, as the server sees it from a peer.

For the segments up to the caller's (path.index), in NSM's order (sdk:
pkg/tools/opa/policies): every token is an ES256 JWT (tokens_valid), none has expired
(tokens_expired), each names the next hop as its audience and the caller's names us
(tokens_chained), every SPIFFE ID in them belongs to a trust domain we accept
(tokens_trust_domain), and the caller's token is signed by the key of the certificate
it presented in mTLS, as itself (prev_token_signed), and the path's first token, where
it began, unless it names the caller (who may sign as itself anyway), is signed by the
certificate chain its x5c header carries, which our bundles trust, as its `sub`
(origin_signed: so a policy on the origin cannot be met by a forged first segment).
Other hops' signatures cannot be checked here (we do not hold their certificates); each
hop checked its predecessor's.

The caller's segment ends when its token does, but never later than the certificate that
signed it, nor than this daemon's own token lifetime from now: a token claiming to last
until 9999 must not keep a connection that its owner stopped refreshing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from spiffe import SpiffeId

from nsmd.caller import Caller
from nsmd.errors import PermissionDenied
from nsmd.identity import tokens
from nsmd.identity.svid import IdentityError
from nsmd.model import Path


def check_path(path: Path, caller: Caller, own_id: str, trust_domains: frozenset[str],
               now: float, max_lifetime_s: float,
               trust: Callable[[tuple[str, ...]], tokens.Trusted]) -> tuple[float, str]:
    """Raises PermissionDenied naming the first policy the path fails; returns the end of
    the caller's segment (its token's expiry, capped as above) and the SPIFFE ID the path
    began with."""
    segments = path.path_segments[:path.index + 1]
    assert caller.certificate is not None
    key = caller.certificate.public_key()
    claims = []
    unsigned = ""   # why the caller's token did not verify, judged after the others
    for i, seg in enumerate(segments):
        try:
            if i < len(segments) - 1:
                claims.append(tokens.read(seg.token))
                continue
            try:
                claims.append(tokens.verify(seg.token, key))  # type: ignore[arg-type]
            except tokens.SignatureError as err:
                unsigned = str(err)
                claims.append(tokens.read(seg.token))
        except tokens.TokenError as err:
            raise PermissionDenied("tokens_valid", f"path segment {i} ({seg.name!r}): "
                                   f"{err if seg.token else 'no token'}") from None
    for i, c in enumerate(claims):
        if c.exp <= now:
            raise PermissionDenied("tokens_expired", f"path segment {i} "
                                   f"({segments[i].name!r}): token expired at {_iso(c.exp)}")
        for who in (c.sub, c.aud):
            if _trust_domain(who) not in trust_domains:
                raise PermissionDenied("tokens_trust_domain", f"path segment {i} "
                                       f"({segments[i].name!r}) names {who!r}, outside the "
                                       f"trust domains {sorted(trust_domains)}")
    for i in range(len(claims) - 1):
        if claims[i].aud != claims[i + 1].sub:
            raise PermissionDenied("tokens_chained", f"path segment {i}'s token is for "
                                   f"{claims[i].aud}, but segment {i + 1}'s is signed by "
                                   f"{claims[i + 1].sub}")
    last = claims[-1]
    if last.aud != own_id:
        raise PermissionDenied("tokens_chained", f"the caller's token is for {last.aud}, "
                               f"not this daemon ({own_id})")
    if last.sub != caller.spiffe_id:
        raise PermissionDenied("prev_token_signed", f"the caller's token is signed as "
                               f"{last.sub}, but the caller is {caller.spiffe_id}")
    if unsigned:
        raise PermissionDenied("prev_token_signed", f"the caller's token: {unsigned}")
    if claims[0].sub != caller.spiffe_id:  # another began the path: its chain must say so
        try:
            tokens.verify_chained(segments[0].token, trust)
        except (tokens.TokenError, IdentityError) as err:
            raise PermissionDenied("origin_signed", f"path segment 0 "
                                   f"({segments[0].name!r}): {err}") from None
    signer_ends = caller.certificate.not_valid_after_utc.timestamp()
    return min(last.exp, signer_ends, now + max_lifetime_s), claims[0].sub


def _trust_domain(spiffe_id: str) -> str:
    try:
        return SpiffeId(spiffe_id).trust_domain.name
    except Exception:  # py-spiffe raises its own error types
        return ""


def _iso(stamp: float) -> str:
    return dt.datetime.fromtimestamp(stamp, dt.UTC).isoformat(timespec="seconds")
