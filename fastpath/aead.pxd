# ChaCha20-Poly1305 (RFC 8439) in place, through OpenSSL's EVP interface, without the GIL.
# The readable twin is the `cryptography` package; tests compare the two.
#
# A context is bound to the cipher once (aead_ctx_new); per packet only key and nonce are
# set. Naming the cipher on every init made OpenSSL 3 look it up in its provider store and
# rebuild the context each time: half of the sealing cost at 1,400-byte packets.
from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memset

from .includes.openssl cimport (EVP_CIPHER, EVP_CIPHER_CTX, EVP_CIPHER_CTX_ctrl,
                                EVP_CIPHER_CTX_free, EVP_CIPHER_CTX_new, EVP_CIPHER_fetch,
                                EVP_CIPHER_free, EVP_CTRL_AEAD_GET_TAG, EVP_CTRL_AEAD_SET_TAG,
                                EVP_DecryptFinal_ex, EVP_DecryptInit_ex, EVP_DecryptUpdate,
                                EVP_EncryptFinal_ex, EVP_EncryptInit_ex, EVP_EncryptUpdate)

cdef enum:
    KEY_BYTES = 32
    TAG_BYTES = 16
    NONCE_BYTES = 12


cdef inline EVP_CIPHER_CTX *aead_ctx_new() noexcept nogil:
    """A context bound to ChaCha20-Poly1305 (no key yet), or NULL; EVP_CIPHER_CTX_free it."""
    cdef EVP_CIPHER *cipher = EVP_CIPHER_fetch(NULL, b"ChaCha20-Poly1305", NULL)
    cdef EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new()
    cdef int ok = cipher != NULL and ctx != NULL \
        and EVP_EncryptInit_ex(ctx, cipher, NULL, NULL, NULL) == 1
    EVP_CIPHER_free(cipher)   # the context keeps its own reference
    if not ok:
        EVP_CIPHER_CTX_free(ctx)
        return NULL
    return ctx


cdef inline void make_nonce(uint8_t *nonce, uint64_t counter) noexcept nogil:
    """96-bit nonce: 32 zero bits, then the 64-bit packet counter little-endian (as WireGuard)."""
    cdef int i
    memset(nonce, 0, 4)
    for i in range(8):
        nonce[4 + i] = <uint8_t>(counter >> (8 * i))


cdef inline int seal(EVP_CIPHER_CTX *ctx, const uint8_t *key, uint64_t counter,
                     const uint8_t *aad, int aad_len, uint8_t *buf, int length) noexcept nogil:
    """Encrypts buf[0:length] in place with a context from aead_ctx_new and appends the tag
    at buf[length]. 0, or -1 on error.

    The caller owns buf and guarantees TAG_BYTES of room after it.
    """
    cdef uint8_t nonce[NONCE_BYTES]
    cdef int outl
    make_nonce(nonce, counter)
    if EVP_EncryptInit_ex(ctx, NULL, NULL, key, nonce) != 1:
        return -1
    if aad_len and EVP_EncryptUpdate(ctx, NULL, &outl, aad, aad_len) != 1:
        return -1
    if length and EVP_EncryptUpdate(ctx, buf, &outl, buf, length) != 1:
        return -1
    if EVP_EncryptFinal_ex(ctx, buf + length, &outl) != 1:
        return -1
    if EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, TAG_BYTES, buf + length) != 1:
        return -1
    return 0


cdef inline int open_in_place(EVP_CIPHER_CTX *ctx, const uint8_t *key, uint64_t counter,
                              const uint8_t *aad, int aad_len, uint8_t *buf,
                              int length) noexcept nogil:
    """Checks and decrypts buf[0:length] (ciphertext + tag) in place.

    Returns the plaintext length, or -1 if the tag does not verify (nothing to trust then).
    """
    cdef uint8_t nonce[NONCE_BYTES]
    cdef int outl
    cdef int plain = length - TAG_BYTES
    if plain < 0:
        return -1
    make_nonce(nonce, counter)
    if EVP_DecryptInit_ex(ctx, NULL, NULL, key, nonce) != 1:
        return -1
    if EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, TAG_BYTES, buf + plain) != 1:
        return -1
    if aad_len and EVP_DecryptUpdate(ctx, NULL, &outl, aad, aad_len) != 1:
        return -1
    if plain and EVP_DecryptUpdate(ctx, buf, &outl, buf, plain) != 1:
        return -1
    if EVP_DecryptFinal_ex(ctx, buf + plain, &outl) != 1:
        return -1
    return plain
