"""Tunnel keys: an X25519 exchange carried in the authenticated control plane, expanded
with HKDF-SHA256 (RFC 5869) into one ChaCha20-Poly1305 key per direction.

The initiator (the client's daemon) sends its ephemeral public key in the Request; the
responder (the endpoint's daemon) answers with its own. Both derive the same pair of keys,
bound to both public keys and the connection, so a key never serves two vWires.
"""

from __future__ import annotations

import base64
import dataclasses

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from nsmd.errors import ValidationError

KEY_BYTES = 32
SALT = b"nsmd tunnel v1"


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
               context: str) -> DirectionKeys:
        peer = decode_public(peer_public_b64)
        try:
            shared = self._private.exchange(X25519PublicKey.from_public_bytes(peer))
        except ValueError:  # a low-order point gives an all-zero secret: refuse it
            raise ValidationError("public_key", "a valid X25519 public key") from None
        okm = HKDF(algorithm=hashes.SHA256(), length=2 * KEY_BYTES, salt=SALT,
                   info=b"keys" + initiator_public + responder_public + context.encode()
                   ).derive(shared)
        return DirectionKeys(okm[:KEY_BYTES], okm[KEY_BYTES:])


def decode_public(value: str, where: str = "public_key") -> bytes:
    try:
        raw = base64.b64decode(value, validate=True)
    except (ValueError, TypeError):
        raw = b""
    if len(raw) != 32:
        raise ValidationError(where, "a base64 X25519 public key (32 bytes)", value)
    return raw


def handshake(initiator: Ephemeral, responder: Ephemeral, context: str,
              ) -> tuple[DirectionKeys, DirectionKeys]:
    """Both sides' view of one exchange (for tests): they must be equal."""
    i = initiator.derive(responder.public_b64, initiator.public, responder.public, context)
    r = responder.derive(initiator.public_b64, initiator.public, responder.public, context)
    return i, r
