import pytest

from nsmd.errors import ValidationError
from nsmd.tunnel_keys import Binding, Ephemeral, decode_public, handshake

A, B, EVIL = "spiffe://td/node/a", "spiffe://td/node/b", "spiffe://td/workload/evil"


def test_both_sides_derive_the_same_distinct_keys():
    a, b = Ephemeral(), Ephemeral()
    mine, theirs = handshake(a, b, Binding(A, B, "conn-1"))
    assert mine == theirs
    assert mine.initiator_to_responder != mine.responder_to_initiator
    assert len(mine.initiator_to_responder) == 32


def test_keys_are_bound_to_the_connection_the_exchange_and_both_identities():
    a, b = Ephemeral(), Ephemeral()
    one, _ = handshake(a, b, Binding(A, B, "conn-1"))
    assert handshake(a, b, Binding(A, B, "conn-2"))[0] != one
    assert handshake(Ephemeral(), b, Binding(A, B, "conn-1"))[0] != one
    # the same exchange agreed with someone else (or as someone else) gives other keys
    assert handshake(a, b, Binding(EVIL, B, "conn-1"))[0] != one
    assert handshake(a, b, Binding(A, EVIL, "conn-1"))[0] != one
    # and the fields cannot slide into each other
    assert handshake(a, b, Binding(A, B + "x", "c"))[0] != handshake(
        a, b, Binding(A, B, "xc"))[0]


def test_bad_public_keys_are_refused():
    with pytest.raises(ValidationError, match="X25519"):
        decode_public("not base64!")
    with pytest.raises(ValidationError, match="32 bytes"):
        decode_public("AAAA")
    a = Ephemeral()
    zero = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="  # a low-order point
    with pytest.raises(ValidationError, match="valid X25519"):
        a.derive(zero, a.public, bytes(32), Binding(A, B, "c"))
