"""authorize: NSM's default token policies and nsmd's own, against real SVIDs from a
development CA; each denial names its policy and leaves nothing behind."""

from __future__ import annotations

import time

import pytest

from nsmd.caller import CALLER, DAEMON, Caller, peer_caller
from nsmd.errors import PermissionDenied
from nsmd.identity import tokens
from nsmd.identity.ca import init_ca, issue_svid
from nsmd.identity.svid import load_svid_dir, verify_chain
from nsmd.manager.authorize import Authorize
from nsmd.manager.begin import Begin
from nsmd.manager.chain import Chain
from nsmd.manager.updatepath import UpdatePath
from nsmd.model import Connection, Mechanism, NetworkServiceRequest, Path, PathSegment
from nsmd.policy import Policy
from nsmd.testing.elements import Count
from nsmd.testing.fake_clock import FakeClock

TD = "example.org"
A, B, EVIL = f"spiffe://{TD}/node/a", f"spiffe://{TD}/node/b", f"spiffe://{TD}/workload/evil"
A_IP = "192.0.2.1"


@pytest.fixture(scope="module")
def svids(tmp_path_factory):
    base = tmp_path_factory.mktemp("ca")
    init_ca(str(base / "ca"), TD)
    init_ca(str(base / "other"), "other.org")
    out = {sid: load_svid_dir(issue_svid(str(base / "ca"), sid, str(base / sid.rsplit("/")[-1])))
           for sid in (A, B, EVIL)}
    out["foreign"] = load_svid_dir(issue_svid(str(base / "other"), "spiffe://other.org/node/a",
                                              str(base / "foreign")))
    return out


def trusted(x5c, bundle):
    chain = tokens.chain_of(x5c)
    return str(verify_chain(chain, bundle)), chain[0].public_key()


class Hosted:
    """Hosting as authorize sees it: which endpoints live here."""

    def __init__(self, *names: str):
        self.names = set(names)

    def spec(self, name: str):
        return object() if name in self.names else None


@pytest.fixture
def bed(svids):
    clock = FakeClock(start=time.time())
    begin, count = Begin(), Count()
    policy = Policy.allow_all()
    bundle = svids[A].bundle   # the test CA, as B's identity trusts it
    authorize = Authorize("b", begin, Hosted("e1"), policy, clock, lambda: B,
                          lambda: frozenset({TD}),
                          lambda x5c: trusted(x5c, bundle))
    chain = Chain(authorize, UpdatePath("b"), begin, count)

    class Bed:
        pass

    bed = Bed()
    bed.__dict__.update(clock=clock, begin=begin, count=count, chain=chain,
                        authorize=authorize, svids=svids)
    return bed


def signed(svid, aud: str, now: float, lifetime: float = 600.0) -> str:
    return tokens.sign(svid, aud, now, lifetime)[0]


def peer_request(bed, *, caller_svid=None, first_token=None, caller_token=None,
                 mech_cls="REMOTE", mech_type="NSMD_UDP", src_ip=A_IP, endpoint="e1",
                 extra_segments=()) -> NetworkServiceRequest:
    """A's daemon asking B for endpoint e1: path [nsc (A->A), a (A->B)], index 1."""
    now = bed.clock.time()
    svid = caller_svid or bed.svids[A]
    sub = str(svid.spiffe_id)
    origin = tokens.sign(svid, sub, now, 600, with_chain=True)[0]   # as a client's daemon
    segments = [PathSegment(name="nsc", id="c0", token=first_token or origin),
                PathSegment(name="a", id="a-seg", token=caller_token or signed(svid, B, now)),
                *extra_segments]
    conn = Connection(id="a-seg", network_service="svc", network_service_endpoint_name=endpoint,
                      path=Path(index=1, path_segments=segments))
    return NetworkServiceRequest(connection=conn, mechanism_preferences=[
        Mechanism(cls=mech_cls, type=mech_type, parameters={"src_ip": src_ip})])


def as_peer(svid, address: str = A_IP) -> Caller:
    return peer_caller(svid.chain[0], str(svid.spiffe_id), address)


async def call(bed, request, caller):
    token = CALLER.set(caller)
    try:
        return await bed.chain.request(request)
    finally:
        CALLER.reset(token)


async def denied(bed, request, caller, policy: str) -> PermissionDenied:
    with pytest.raises(PermissionDenied) as info:
        await call(bed, request, caller)
    assert info.value.policy == policy, str(info.value)
    assert bed.count.requests == 0 and not bed.begin.connections()  # nothing ran
    return info.value


async def test_a_chained_signed_path_from_its_signer_passes(bed):
    conn = await call(bed, peer_request(bed), as_peer(bed.svids[A]))
    assert bed.count.requests == 1
    ours = conn.path.path_segments[2].id
    assert bed.begin.owner(ours) == A
    # the caller's segment ends when its token does (that arms our timeout)
    exp = tokens.read(conn.path.path_segments[1].token).exp
    assert conn.path.path_segments[1].expires == exp


async def test_a_caller_token_that_claims_to_last_for_ever_ends_with_our_lifetime(bed):
    now = bed.clock.time()
    svid = bed.svids[A]
    for_ever = tokens.jwt.encode({"sub": A, "aud": B, "exp": 253402300799}, svid.key,
                                 algorithm="ES256")   # 9999-12-31
    conn = await call(bed, peer_request(bed, caller_token=for_ever), as_peer(svid))
    assert conn.path.path_segments[1].expires == now + 600   # our token lifetime
    # ... nor later than the certificate that signed it
    bed.authorize.max_token_s = 10 * 365 * 86400
    conn = await call(bed, peer_request(bed, caller_token=for_ever), as_peer(svid))
    assert conn.path.path_segments[1].expires == svid.not_after.timestamp()


async def test_a_path_begins_where_its_first_tokens_certificate_says(bed, tmp_path):
    """origin_signed: a relay cannot begin a path in another's name: the first token must
    be signed by the certificate its x5c chain carries, trusted by our bundle, as `sub`."""
    now = bed.clock.time()
    evil, a = bed.svids[EVIL], bed.svids[A]
    a_chain = tokens._JWS.get_unverified_header(
        tokens.sign(a, EVIL, now, 600, with_chain=True)[0])["x5c"]
    init_ca(str(tmp_path / "rogue"), TD)   # another CA calling itself the same trust domain
    rogue = load_svid_dir(issue_svid(str(tmp_path / "rogue"), A, str(tmp_path / "rogue-a")))
    claims = {"sub": A, "aud": EVIL, "exp": now + 600}
    for first in (
            tokens.jwt.encode(claims, evil.key, algorithm="ES256"),    # no chain at all
            tokens.jwt.encode(claims, evil.key, algorithm="ES256",     # A's chain, evil's key
                              headers={"x5c": a_chain}),
            tokens.jwt.encode(claims, evil.key, algorithm="ES256",     # sub A, evil's chain
                              headers={"x5c": tokens._JWS.get_unverified_header(
                                  tokens.sign(evil, EVIL, now, 600, with_chain=True)[0])
                                  ["x5c"]}),
            tokens.sign(rogue, EVIL, now, 600, with_chain=True)[0]):   # a chain we do not trust
        request = peer_request(bed, caller_svid=evil, first_token=first,
                               caller_token=signed(evil, B, now))
        err = await denied(bed, request, as_peer(evil), "origin_signed")
        assert "path segment 0" in str(err)
    # a path the caller began itself needs no chain: it may sign as itself anyway
    await call(bed, peer_request(bed, caller_svid=evil, first_token=signed(evil, EVIL, now),
                                 caller_token=signed(evil, B, now)), as_peer(evil))


async def test_forged_expired_unchained_wrong_audience_and_foreign_tokens(bed):
    now = bed.clock.time()
    a, evil = bed.svids[A], bed.svids[EVIL]
    # signed by another key under A's name: A's certificate does not verify it
    forged = tokens.jwt.encode({"sub": A, "aud": B, "exp": now + 60}, evil.key, algorithm="ES256")
    await denied(bed, peer_request(bed, caller_token=forged), as_peer(a), "prev_token_signed")
    await denied(bed, peer_request(bed, caller_token=signed(a, B, now - 700)), as_peer(a),
                 "tokens_expired")
    await denied(bed, peer_request(bed, first_token=signed(a, EVIL, now)), as_peer(a),
                 "tokens_chained")
    await denied(bed, peer_request(bed, caller_token=signed(a, EVIL, now)), as_peer(a),
                 "tokens_chained")
    foreign = bed.svids["foreign"]
    await denied(bed, peer_request(bed, caller_svid=foreign, caller_token=signed(foreign, B, now)),
                 as_peer(foreign), "tokens_trust_domain")
    await denied(bed, peer_request(bed, caller_token="not.a.jwt"), as_peer(a), "tokens_valid")
    hs256 = tokens.jwt.encode({"sub": A, "aud": B, "exp": now + 60}, "k" * 32, algorithm="HS256")
    await denied(bed, peer_request(bed, caller_token=hs256), as_peer(a), "tokens_valid")
    # A's valid token, presented by someone else's TLS connection
    await denied(bed, peer_request(bed), as_peer(evil), "prev_token_signed")


async def test_peers_get_no_local_interfaces_no_relaying_and_no_foreign_offers(bed):
    a = as_peer(bed.svids[A])
    error = await denied(bed, peer_request(bed, mech_cls="LOCAL", mech_type="KERNEL"), a,
                         "remote_mechanisms_only")
    assert "KERNEL" in str(error)
    await denied(bed, peer_request(bed, endpoint="elsewhere"), a, "hosted_endpoints_only")
    await denied(bed, peer_request(bed, endpoint=""), a, "hosted_endpoints_only")
    # an offer naming another address (a private one behind a NAT, or a third party's) is
    # aimed at the caller's own address
    request = peer_request(bed, src_ip="198.51.100.7")
    await call(bed, request, a)
    assert request.mechanism_preferences[0].parameters["src_ip"] == A_IP


async def test_refresh_and_close_only_by_the_creator_and_only_of_its_own_segments(bed):
    a, evil = as_peer(bed.svids[A]), as_peer(bed.svids[EVIL], "192.0.2.66")
    conn = await call(bed, peer_request(bed), a)
    ours = conn.path.path_segments[2]
    # the attacker names our segment (ids are visible to every hop) in a path of its own
    now = bed.clock.time()
    hijack = peer_request(bed, caller_svid=bed.svids[EVIL],
                          caller_token=signed(bed.svids[EVIL], B, now), src_ip="192.0.2.66",
                          extra_segments=[PathSegment(name="b", id=ours.id)])
    with pytest.raises(PermissionDenied, match="belongs to spiffe://example.org/node/a") as info:
        await call(bed, hijack, evil)
    assert info.value.policy == "refresh_by_owner"
    # a segment carrying our name as the caller's is refused outright
    spoof = peer_request(bed)
    spoof.connection.path.path_segments[1].name = "b"
    with pytest.raises(PermissionDenied, match="this daemon's name"):
        await call(bed, spoof, a)
    # a new request cannot choose the ids after its own segment: they are made here
    fresh = await call(bed, peer_request(bed, extra_segments=[
        PathSegment(name="b", id="chosen"), PathSegment(name="e1", id="victim-wire")]), a)
    assert [s.id for s in fresh.path.path_segments[2:]] != ["chosen", "victim-wire"]
    # the owner's refresh keeps our segments as we recorded them
    again = peer_request(bed, extra_segments=[PathSegment(name="b", id=ours.id, token="junk")])
    refreshed = await call(bed, again, a)
    assert refreshed.path.path_segments[2] == ours
    # close: the attacker's is refused, the owner's goes through
    token = CALLER.set(evil)
    try:
        with pytest.raises(PermissionDenied, match="refresh_by_owner|belongs"):
            await bed.chain.close(hijack.connection)
    finally:
        CALLER.reset(token)
    assert bed.begin.owner(ours.id) == A
    token = CALLER.set(a)
    try:
        closing = conn.clone()
        closing.path.index, closing.id = 1, conn.path.path_segments[1].id
        await bed.chain.close(closing)
    finally:
        CALLER.reset(token)
    assert bed.begin.owner(ours.id) is None


async def test_policy_file_rules_name_themselves(bed):
    bed.authorize.policy = Policy.parse({"services": [{"name": "sv*", "request": [B]}]}, "p.yaml")
    error = await denied(bed, peer_request(bed), as_peer(bed.svids[A]), "services[0]")
    assert "may not request network service 'svc'" in str(error) and "p.yaml" in str(error)


async def test_a_request_without_a_caller_is_refused_and_the_daemon_passes(bed):
    with pytest.raises(PermissionDenied) as info:
        await bed.chain.request(peer_request(bed))
    assert info.value.policy == "caller_known"
    token = CALLER.set(DAEMON)
    try:
        local = NetworkServiceRequest(connection=Connection(
            id="x", network_service="svc", path=Path(0, [PathSegment(name="nsc", id="x")])))
        await bed.chain.request(local)
    finally:
        CALLER.reset(token)
    assert bed.count.requests == 1
