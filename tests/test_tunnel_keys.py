import pytest

from nsmd.errors import ValidationError
from nsmd.tunnel_keys import Ephemeral, decode_public, handshake


def test_both_sides_derive_the_same_distinct_keys():
    a, b = Ephemeral(), Ephemeral()
    mine, theirs = handshake(a, b, "conn-1")
    assert mine == theirs
    assert mine.initiator_to_responder != mine.responder_to_initiator
    assert len(mine.initiator_to_responder) == 32


def test_keys_are_bound_to_the_connection_and_the_exchange():
    a, b = Ephemeral(), Ephemeral()
    one, _ = handshake(a, b, "conn-1")
    two, _ = handshake(a, b, "conn-2")
    assert one != two
    three, _ = handshake(Ephemeral(), b, "conn-1")
    assert three != one


def test_bad_public_keys_are_refused():
    with pytest.raises(ValidationError, match="X25519"):
        decode_public("not base64!")
    with pytest.raises(ValidationError, match="32 bytes"):
        decode_public("AAAA")
    a = Ephemeral()
    zero = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="  # a low-order point
    with pytest.raises(ValidationError, match="valid X25519"):
        a.derive(zero, a.public, bytes(32), "c")
