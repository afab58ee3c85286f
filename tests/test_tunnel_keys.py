import pytest

from nsmd.errors import ValidationError
from nsmd.tunnel_keys import (
    Binding,
    Ephemeral,
    TunnelKeying,
    choose_aead,
    cpu_has_fast_aes,
    decode_public,
    handshake,
    parse_aeads,
)

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


def test_keys_are_bound_to_the_aead():
    a, b = Ephemeral(), Ephemeral()
    chacha, _ = handshake(a, b, Binding(A, B, "c"), "chacha20-poly1305")
    gcm, gcm_b = handshake(a, b, Binding(A, B, "c"), "aes-256-gcm")
    assert gcm == gcm_b and gcm != chacha
    # ChaCha20-Poly1305 derives as before AEADs were negotiated: older peers still match
    assert chacha == handshake(a, b, Binding(A, B, "c"))[0]


def test_auto_puts_aes_gcm_first_only_where_the_cpu_has_aes_instructions(tmp_path, monkeypatch):
    import nsmd.tunnel_keys as tk

    for flags, fast in (("fpu sse2 aes avx2 pclmulqdq", True), ("fpu sse2 avx2", False),
                        ("fpu aes", False)):
        (tmp_path / "cpuinfo").write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        assert cpu_has_fast_aes(str(tmp_path / "cpuinfo")) is fast
    (tmp_path / "arm").write_text("processor\t: 0\nFeatures\t: fp asimd aes pmull sha2\n")
    assert cpu_has_fast_aes(str(tmp_path / "arm"))
    assert not cpu_has_fast_aes(str(tmp_path / "missing"))
    monkeypatch.setattr(tk, "cpu_has_fast_aes", lambda: False)
    assert parse_aeads("auto", "tunnel-aead") == ("chacha20-poly1305", "aes-256-gcm")
    monkeypatch.setattr(tk, "cpu_has_fast_aes", lambda: True)
    assert parse_aeads("auto", "tunnel-aead") == ("aes-256-gcm", "chacha20-poly1305")


def test_a_tunnel_aead_setting_is_checked():
    assert parse_aeads("chacha20-poly1305", "tunnel-aead") == ("chacha20-poly1305",)
    assert parse_aeads("chacha20-poly1305, aes-256-gcm", "x") == ("chacha20-poly1305",
                                                                  "aes-256-gcm")
    for bad in ("", "aes-128-gcm", "aes-256-gcm,aes-256-gcm", "auto,aes-256-gcm"):
        with pytest.raises(ValidationError, match="tunnel-aead.*auto, or some of"):
            parse_aeads(bad, "tunnel-aead")


def test_the_responder_picks_its_own_first_choice_among_those_offered():
    both = ("aes-256-gcm", "chacha20-poly1305")
    assert choose_aead("chacha20-poly1305,aes-256-gcm", both) == "aes-256-gcm"
    assert choose_aead("aes-256-gcm,chacha20-poly1305", both[::-1]) == "chacha20-poly1305"
    assert choose_aead("future-aead,aes-256-gcm", both) == "aes-256-gcm"  # unknown: skipped
    assert choose_aead(None, both) == "chacha20-poly1305"  # a peer that names none
    with pytest.raises(ValidationError, match="offer.aead.*accepts \\(aes-256-gcm\\)"):
        choose_aead("chacha20-poly1305", ("aes-256-gcm",))


def test_an_answer_naming_an_aead_that_was_not_offered_is_refused():
    keying = TunnelKeying(dataplane=None)  # the answer is refused before it is used
    mine = Ephemeral()
    offer = {"src_index": "1", "aead": "chacha20-poly1305"}
    answer = {"dst_public_key": Ephemeral().public_b64, "dst_index": "2",
              "aead": "aes-256-gcm"}
    with pytest.raises(ValidationError, match="answer.aead.*offered AEADs"):
        keying.accept(None, mine, offer, answer, Binding(A, B, "c"))


class FakeDataplane:
    """What TunnelKeying asks of the data plane, recorded."""

    def __init__(self, aeads: tuple[str, ...], partial_ok: bool = True):
        self.aeads = aeads
        self.partial_ok = partial_ok
        self.installed: list[tuple[bytes, bytes, str]] = []
        self.csum_partial: list[bool] = []

    def takes_partial_csum(self, wire) -> bool:
        return self.partial_ok

    def set_peer(self, wire, ip: str, port: int) -> None:
        pass

    def next_local_index(self, wire) -> int:
        return 7 << 8

    def tunnel_address(self, wire) -> tuple[str, int]:
        return "192.0.2.2", 51820

    def install_keys(self, wire, local_index, remote_index, send, recv, confirmed, aead,
                     csum_partial=False):
        self.installed.append((send, recv, aead))
        self.csum_partial.append(csum_partial)
        wire.keyed = True


def keyed_pair(initiator_aeads, responder_aeads, drop_aead=False, near=None, far=None):
    """One first keying between two TunnelKeyings: (initiator's, responder's) installs."""
    import types

    near = near or FakeDataplane(initiator_aeads)
    far = far or FakeDataplane(responder_aeads)
    wire_a = types.SimpleNamespace(keyed=False, agreed={})
    wire_b = types.SimpleNamespace(keyed=False, agreed={})
    initiator, responder = TunnelKeying(near), TunnelKeying(far)
    mine, offer = initiator.offer(wire_a, context="conn-1")
    if drop_aead:   # daemons from before AEADs were negotiated name none
        offer.pop("aead")
    answer = responder.respond(wire_b, offer, Binding(A, B, "conn-1"), rekey=False)
    if drop_aead:
        answer.pop("aead")
    initiator.accept(wire_a, mine, offer, answer, Binding(A, B, "conn-1"))
    return near.installed[0], far.installed[0]


def test_both_ends_install_mirrored_keys_under_the_responders_choice():
    (a_send, a_recv, a_aead), (b_send, b_recv, b_aead) = keyed_pair(
        ("chacha20-poly1305", "aes-256-gcm"), ("aes-256-gcm", "chacha20-poly1305"))
    assert a_aead == b_aead == "aes-256-gcm"
    assert (a_send, a_recv) == (b_recv, b_send)


def test_a_peer_that_names_no_aead_keys_chacha20_poly1305_with_us():
    (a_send, a_recv, a_aead), (b_send, b_recv, b_aead) = keyed_pair(
        ("aes-256-gcm", "chacha20-poly1305"), ("aes-256-gcm", "chacha20-poly1305"),
        drop_aead=True)
    assert a_aead == b_aead == "chacha20-poly1305"
    assert (a_send, a_recv) == (b_recv, b_send)


@pytest.mark.parametrize("near_ok,far_ok", [(True, True), (True, False), (False, True),
                                            (False, False)])
def test_each_side_sends_partial_tcp_checksums_only_to_a_peer_that_takes_them(near_ok, far_ok):
    both = ("aes-256-gcm",)
    near, far = FakeDataplane(both, partial_ok=near_ok), FakeDataplane(both, partial_ok=far_ok)
    keyed_pair(both, both, near=near, far=far)
    assert near.csum_partial == [far_ok] and far.csum_partial == [near_ok]


def test_a_peer_from_before_partial_checksums_gets_full_ones():
    import types

    near = FakeDataplane(("aes-256-gcm",))
    keying = TunnelKeying(near)
    mine, offer = keying.offer(types.SimpleNamespace(keyed=False, agreed={}), context="c")
    assert offer["tcp_csum"] == "partial"
    far = FakeDataplane(("aes-256-gcm",))
    answer = TunnelKeying(far).respond(types.SimpleNamespace(keyed=False, agreed={}),
                                       {k: v for k, v in offer.items() if k != "tcp_csum"},
                                       Binding(A, B, "c"), rekey=False)
    assert far.csum_partial == [False]      # the old initiator said nothing: full checksums
    answer.pop("tcp_csum")                  # an old responder says nothing either
    keying.accept(types.SimpleNamespace(keyed=False, agreed={}), mine, offer, answer,
                  Binding(A, B, "c"))
    assert near.csum_partial == [False]
