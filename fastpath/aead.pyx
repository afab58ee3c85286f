"""Python entry points to the fast path's AEAD, for tests and tools (never on the data path)."""

from libc.stdint cimport uint8_t, uint64_t

from .aead cimport TAG_BYTES, aead_ctx_new, open_in_place, seal
from .includes.openssl cimport EVP_CIPHER_CTX, EVP_CIPHER_CTX_free


class AeadError(ValueError):
    pass


def seal_packet(const uint8_t[::1] key, uint64_t counter, const uint8_t[::1] aad,
                const uint8_t[::1] plaintext):
    """ciphertext + tag of `plaintext`, exactly as the engine seals it."""
    if key.shape[0] != 32:
        raise AeadError("key must be 32 bytes")
    buf = bytearray(plaintext.shape[0] + TAG_BYTES)
    buf[:plaintext.shape[0]] = plaintext
    cdef uint8_t[::1] out = buf
    cdef EVP_CIPHER_CTX *ctx = aead_ctx_new()
    cdef int rc
    if ctx == NULL:
        raise MemoryError()
    try:
        rc = seal(ctx, &key[0], counter, &aad[0] if aad.shape[0] else NULL, aad.shape[0],
                  &out[0], plaintext.shape[0])
    finally:
        EVP_CIPHER_CTX_free(ctx)
    if rc < 0:
        raise AeadError("seal failed")
    return bytes(buf)


def open_packet(const uint8_t[::1] key, uint64_t counter, const uint8_t[::1] aad,
                const uint8_t[::1] sealed):
    """The plaintext of `sealed` (ciphertext + tag); AeadError if it does not authenticate."""
    if key.shape[0] != 32:
        raise AeadError("key must be 32 bytes")
    buf = bytearray(sealed)
    if len(buf) < TAG_BYTES:
        raise AeadError("shorter than a tag")
    cdef uint8_t[::1] data = buf
    cdef EVP_CIPHER_CTX *ctx = aead_ctx_new()
    cdef int n
    if ctx == NULL:
        raise MemoryError()
    try:
        n = open_in_place(ctx, &key[0], counter, &aad[0] if aad.shape[0] else NULL,
                          aad.shape[0], &data[0], data.shape[0])
    finally:
        EVP_CIPHER_CTX_free(ctx)
    if n < 0:
        raise AeadError("authentication failed")
    return bytes(buf[:n])
