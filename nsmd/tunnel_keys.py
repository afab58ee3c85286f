"""Tunnel keying, both roles and rekeys: an X25519 exchange carried in the authenticated
control plane, expanded with HKDF-SHA256 (RFC 5869) into one AEAD key per direction
(docs/wire-format.md).

The initiator (the client's daemon) offers an ephemeral public key and the receiver index
it will accept, in the Request or a rekey; the responder (the endpoint's daemon) answers
with its own. The keys are bound to both public keys, both daemons' SPIFFE IDs (as each
side authenticated the other in mTLS) and the connection, so keys agreed with anyone else,
or for another vWire, never match.

Each side also says whether it takes TCP segments with partial checksums (`tcp_csum`:
"partial"); a side that was told so sends the segments it cuts from super-packets that
way (docs/wire-format.md). A peer that says nothing gets full checksums.

The AEAD is agreed in the same exchange: the offer lists the initiator's, preferred first;
the responder answers with the first of its own list that the offer names. "auto" puts
AES-256-GCM first where the CPU has AES and carry-less multiply instructions (sealing
and opening cost ~40 % of ChaCha20-Poly1305's there), ChaCha20-Poly1305 first elsewhere.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from collections.abc import Mapping

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from nsmd.dataplane import AEADS, Dataplane, Wire
from nsmd.errors import ValidationError

KEY_BYTES = 32
SALT = b"nsmd tunnel v2"
OFFER_KEYS = ("src_ip", "src_port", "src_public_key", "src_index", "key_context")
ANSWER_KEYS = ("dst_ip", "dst_port", "dst_public_key", "dst_index")
PREVIOUS_GRACE_S = 10.0   # how long the old keypair still opens packets after a rekey
# Optional in both: the offer's AEADs (comma-separated, preferred first), the answer's choice.
AEAD_PARAM = "aead"
# What a peer that names no AEAD speaks (nsmd before AEADs were negotiated).
DEFAULT_AEAD = "chacha20-poly1305"
# Optional in both: "partial" if the sender of the offer (answer) takes TCP segments with
# partial checksums.
CSUM_PARAM = "tcp_csum"
CSUM_PARTIAL = "partial"


def cpu_has_fast_aes(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """AES rounds and GHASH's carry-less multiply in hardware (x86 aes + pclmulqdq, Arm
    aes + pmull): what makes AES-GCM cheaper than ChaCha20-Poly1305."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags = set(line.split(":", 1)[1].split())
                    return "aes" in flags and bool(flags & {"pclmulqdq", "pmull"})
    except OSError:
        pass
    return False


def parse_aeads(value: str, where: str) -> tuple[str, ...]:
    """A tunnel-aead setting: "auto", or known AEAD names, comma-separated, preferred first."""
    if value == "auto":
        fast_aes = ("aes-256-gcm", "chacha20-poly1305")
        return fast_aes if cpu_has_fast_aes() else fast_aes[::-1]
    names = tuple(n.strip() for n in value.split(","))
    if not names or any(n not in AEADS for n in names) or len(set(names)) != len(names):
        raise ValidationError(where, f"auto, or some of {', '.join(AEADS)} (comma-separated, "
                              "preferred first, each once)", value)
    return names


def offered_aeads(value: str | None) -> list[str]:
    """The AEADs an offer's `aead` names, preferred first (none named: the default)."""
    return [n.strip() for n in (value or DEFAULT_AEAD).split(",")]


def choose_aead(offered: str | None, ours: tuple[str, ...]) -> str:
    """The responder's pick: the first of `ours` that the offer names."""
    names = offered_aeads(offered)
    for name in ours:
        if name in names:
            return name
    raise ValidationError("offer.aead", f"an AEAD this daemon accepts ({', '.join(ours)})",
                          ",".join(names))


def agreed_offer(agreed: Mapping[str, str]) -> dict[str, str]:
    """The offer that repeats an agreed keying (a refresh: nothing changes)."""
    return {k: agreed[k] for k in (*OFFER_KEYS, AEAD_PARAM, CSUM_PARAM) if k in agreed}


@dataclasses.dataclass(frozen=True)
class Binding:
    """What a keypair is for: initiator and responder (SPIFFE IDs), and the vWire."""
    initiator: str
    responder: str
    context: str   # key_context: the client-side connection id

    def info(self, initiator_public: bytes, responder_public: bytes,
             aead: str = DEFAULT_AEAD) -> bytes:
        # The AEAD is bound in too (keys agreed for one never serve another); the default
        # adds nothing, so keys agreed with a daemon that names no AEAD still match.
        return b"\0".join((b"keys" + initiator_public + responder_public,
                           self.context.encode(), self.initiator.encode(),
                           self.responder.encode())
                          + (() if aead == DEFAULT_AEAD else (aead.encode(),)))


@dataclasses.dataclass(frozen=True)
class DirectionKeys:
    initiator_to_responder: bytes
    responder_to_initiator: bytes


class Ephemeral:
    """One side's X25519 key pair for one exchange; discard it once keys are derived."""

    def __init__(self) -> None:
        self._private = X25519PrivateKey.generate()
        self.public = self._private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def public_b64(self) -> str:
        return base64.b64encode(self.public).decode()

    def derive(self, peer_public_b64: str, initiator_public: bytes, responder_public: bytes,
               binding: Binding, aead: str = DEFAULT_AEAD) -> DirectionKeys:
        peer = decode_public(peer_public_b64)
        try:
            shared = self._private.exchange(X25519PublicKey.from_public_bytes(peer))
        except ValueError:  # a low-order point gives an all-zero secret: refuse it
            raise ValidationError("public_key", "a valid X25519 public key") from None
        okm = HKDF(algorithm=hashes.SHA256(), length=2 * KEY_BYTES, salt=SALT,
                   info=binding.info(initiator_public, responder_public, aead)).derive(shared)
        return DirectionKeys(okm[:KEY_BYTES], okm[KEY_BYTES:])


def decode_public(value: str, where: str = "public_key") -> bytes:
    try:
        raw = base64.b64decode(value, validate=True)
    except (ValueError, TypeError):
        raw = b""
    if len(raw) != 32:
        raise ValidationError(where, "a base64 X25519 public key (32 bytes)", value)
    return raw


class TunnelKeying:
    """Installs agreed keys on a tunnel wire of the dataplane, in either role."""

    def __init__(self, dataplane: Dataplane):
        self.dataplane = dataplane

    def offer(self, wire: Wire, context: str = "") -> tuple[Ephemeral, dict[str, str]]:
        """The initiator's offer: a first one (with our address and `context`), or a rekey
        of an agreed tunnel (context "": the agreed one)."""
        mine = Ephemeral()
        if context:
            host, port = self.dataplane.tunnel_address(wire)
            base = {"src_ip": host, "src_port": str(port), "key_context": context}
        else:
            base = {k: wire.agreed[k] for k in OFFER_KEYS}
        return mine, {**base, "src_public_key": mine.public_b64,
                      "src_index": str(self.dataplane.next_local_index(wire)),
                      AEAD_PARAM: ",".join(self.dataplane.aeads), **self._csum(wire)}

    def _csum(self, wire: Wire) -> dict[str, str]:
        return {CSUM_PARAM: CSUM_PARTIAL} if self.dataplane.takes_partial_csum(wire) else {}

    def accept(self, wire: Wire, mine: Ephemeral, offer: dict[str, str],
               answer: dict[str, str], binding: Binding) -> None:
        """The initiator installs the keys of an answered offer (CURRENT at once: it sends
        a keepalive under them, which is how the responder learns it has them)."""
        aead = answer.get(AEAD_PARAM, DEFAULT_AEAD)
        offered = offered_aeads(offer.get(AEAD_PARAM))
        if aead not in offered:
            raise ValidationError("answer.aead", f"one of the offered AEADs "
                                  f"({','.join(offered)})", aead)
        keys = mine.derive(answer["dst_public_key"], mine.public,
                           decode_public(answer["dst_public_key"]), binding, aead)
        rekey = wire.keyed
        if not rekey:
            self.dataplane.set_peer(wire, answer["dst_ip"], int(answer["dst_port"]))
        self.dataplane.install_keys(wire, int(offer["src_index"]), int(answer["dst_index"]),
                                    send=keys.initiator_to_responder,
                                    recv=keys.responder_to_initiator, confirmed=True,
                                    aead=aead,
                                    csum_partial=answer.get(CSUM_PARAM) == CSUM_PARTIAL)
        wire.agreed = {**wire.agreed, **offer, **{k: answer[k] for k in ANSWER_KEYS
                                                  if k in answer}, AEAD_PARAM: aead}
        if rekey:
            self._expire_previous_later(wire, int(offer["src_index"]))

    def respond(self, wire: Wire, offer: dict[str, str], binding: Binding,
                rekey: bool) -> dict[str, str]:
        """The responder's answer. A first keying points the wire at the offer's address
        and sends at once; a rekey waits in NEXT until the initiator's first packet under
        it, so packets sealed under the old keys in flight still open."""
        if rekey and offer["key_context"] != wire.agreed.get("key_context"):
            raise ValidationError("offer.key_context", "the key_context of this vWire",
                                  offer["key_context"])
        aead = choose_aead(offer.get(AEAD_PARAM), self.dataplane.aeads)
        mine = Ephemeral()
        keys = mine.derive(offer["src_public_key"], decode_public(offer["src_public_key"]),
                           mine.public, binding, aead)
        index = self.dataplane.next_local_index(wire)
        if not rekey:
            self.dataplane.set_peer(wire, offer["src_ip"], int(offer["src_port"]))
        self.dataplane.install_keys(wire, index, int(offer["src_index"]),
                                    send=keys.responder_to_initiator,
                                    recv=keys.initiator_to_responder, confirmed=not rekey,
                                    aead=aead,
                                    csum_partial=offer.get(CSUM_PARAM) == CSUM_PARTIAL)
        host, port = self.dataplane.tunnel_address(wire)
        answer = {"dst_ip": host, "dst_port": str(port), "dst_public_key": mine.public_b64,
                  "dst_index": str(index), AEAD_PARAM: aead, **self._csum(wire)}
        wire.agreed = {**{k: offer[k] for k in OFFER_KEYS}, **answer}
        if rekey:
            self._expire_previous_later(wire, index)
        return answer

    def _expire_previous_later(self, wire: Wire, new_index: int) -> None:
        asyncio.get_running_loop().call_later(PREVIOUS_GRACE_S,
                                              self.dataplane.expire_previous, wire, new_index)


def handshake(initiator: Ephemeral, responder: Ephemeral, binding: Binding,
              aead: str = DEFAULT_AEAD) -> tuple[DirectionKeys, DirectionKeys]:
    """Both sides' view of one exchange (for tests): they must be equal."""
    i = initiator.derive(responder.public_b64, initiator.public, responder.public, binding,
                         aead)
    r = responder.derive(initiator.public_b64, initiator.public, responder.public, binding,
                         aead)
    return i, r
