"""Python entry points to the fast path's AEAD, for tests and tools (never on the data path)."""

from libc.stdint cimport uint8_t, uint64_t
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

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


def seal_seconds(int size, int count):
    """Seconds to seal `count` packets of `size` bytes one after another the engine's way
    (one context, key and nonce set per packet), for benchmarks."""
    if size < 0 or count < 1:
        raise ValueError("size >= 0 and count >= 1")
    buf = bytearray(16 + size + TAG_BYTES)
    cdef uint8_t[::1] data = buf
    cdef uint8_t key[32]
    cdef EVP_CIPHER_CTX *ctx = aead_ctx_new()
    cdef int i, rc = 0
    cdef timespec start, end
    if ctx == NULL:
        raise MemoryError()
    for i in range(32):
        key[i] = <uint8_t>i
    with nogil:
        clock_gettime(CLOCK_MONOTONIC, &start)
        for i in range(count):
            rc |= seal(ctx, key, <uint64_t>i, &data[0], 16, &data[16], size)
        clock_gettime(CLOCK_MONOTONIC, &end)
    EVP_CIPHER_CTX_free(ctx)
    if rc:
        raise AeadError("seal failed")
    return (end.tv_sec - start.tv_sec) + (end.tv_nsec - start.tv_nsec) * 1e-9
