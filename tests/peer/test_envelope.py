"""Sealed calls (nsmd/peer/envelope.py): whoever carries them, only the daemon they are for
opens them, once, while they live, and only if a CA of its bundle vouches for the sender."""

from __future__ import annotations

import time

import pytest

from nsmd.errors import PermissionDenied
from nsmd.identity import tokens
from nsmd.identity.ca import init_ca, issue_svid
from nsmd.identity.svid import load_svid_dir, spiffe_id_of, verify_chain
from nsmd.peer.envelope import LIFETIME_S, Opener, seal

A, B = "spiffe://env.test/node/a", "spiffe://env.test/node/b"


@pytest.fixture(scope="module")
def domain(tmp_path_factory):
    root = tmp_path_factory.mktemp("env")
    init_ca(str(root / "ca"), "env.test")
    init_ca(str(root / "evil"), "env.test")   # same name, other keys
    svids = {sid: load_svid_dir(issue_svid(str(root / "ca"), sid, str(root / sid[-1])))
             for sid in (A, B)}
    svids["impostor"] = load_svid_dir(issue_svid(str(root / "evil"), A, str(root / "x")))
    return svids


def signer(svid) -> tokens.Signer:
    return tokens.Signer(lambda: svid)


def opener_for(domain, own: str) -> Opener:
    bundle = domain[own].bundle

    def trust(x5c):
        chain = tokens.chain_of(x5c)
        return str(verify_chain(chain, bundle)), chain[0].public_key()
    return Opener(trust, lambda: own)


def test_a_call_opens_once_for_its_addressee_with_its_body(domain):
    sealed, jti = seal(signer(domain[A]), B, {"op": "/v1/peer/request"}, {"k": [1, b"x"]})
    opened = opener_for(domain, B).open(sealed)
    assert (opened.sender, opened.jti, opened.claims["op"]) == (A, jti, "/v1/peer/request")
    assert opened.body() == {"k": [1, b"x"]}
    assert str(spiffe_id_of(opened.certificate)) == A   # the leaf the caller is named by


@pytest.mark.parametrize("case, message", [
    ("other addressee", "is for"),
    ("replayed", "a replay"),
    ("expired", "expired"),
    ("impostor CA", "not trusted"),
    ("tampered", "does not verify"),
    ("wrong sender", "not " + B),
])
def test_what_a_carrier_or_an_impostor_sends_is_refused(domain, case, message):
    opener = opener_for(domain, B)
    sealed, _ = seal(signer(domain[A]), B, {}, {"x": 1})
    expect = ""
    if case == "other addressee":
        sealed, _ = seal(signer(domain[A]), "spiffe://env.test/node/c", {}, {})
    elif case == "replayed":
        opener.open(sealed)
    elif case == "expired":
        sealed, _ = seal(signer(domain[A]), B, {}, {}, now=time.time() - LIFETIME_S - 1)
    elif case == "impostor CA":
        sealed, _ = seal(signer(domain["impostor"]), B, {}, {})
    elif case == "tampered":
        head, payload, sig = sealed.split(".")
        sealed = ".".join([head, payload[:-4] + ("AAAA" if payload[-4:] != "AAAA" else "BBBB"),
                           sig])
    elif case == "wrong sender":
        expect = B
    with pytest.raises(PermissionDenied, match=message):
        opener.open(sealed, expect_sender=expect)


def test_a_reply_must_answer_its_own_call(domain):
    _, jti = seal(signer(domain[A]), B, {}, {})
    reply, _ = seal(signer(domain[B]), A, {"status": 200}, {"ok": 1}, jti=jti)
    opener = opener_for(domain, A)
    assert opener.open(reply, expect_sender=B, reply_to=jti).claims["status"] == 200
    with pytest.raises(PermissionDenied, match="another call"):
        opener.open(reply, expect_sender=B, reply_to="f" * 32)
