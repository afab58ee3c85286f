# ChaCha20-Poly1305 (RFC 8439) in place, through OpenSSL's EVP interface, without the GIL.
# The readable twin is the `cryptography` package; tests compare the two.
from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memset

from .includes.openssl cimport (EVP_CIPHER_CTX, EVP_CIPHER_CTX_ctrl, EVP_CTRL_AEAD_GET_TAG,
                                EVP_CTRL_AEAD_SET_TAG, EVP_chacha20_poly1305,
                                EVP_DecryptFinal_ex, EVP_DecryptInit_ex, EVP_DecryptUpdate,
                                EVP_EncryptFinal_ex, EVP_EncryptInit_ex, EVP_EncryptUpdate)

cdef enum:
    KEY_BYTES = 32
    TAG_BYTES = 16
    NONCE_BYTES = 12


cdef inline void make_nonce(uint8_t *nonce, uint64_t counter) noexcept nogil:
    """96-bit nonce: 32 zero bits, then the 64-bit packet counter little-endian (as WireGuard)."""
    cdef int i
    memset(nonce, 0, 4)
    for i in range(8):
        nonce[4 + i] = <uint8_t>(counter >> (8 * i))


cdef inline int seal(EVP_CIPHER_CTX *ctx, const uint8_t *key, uint64_t counter,
                     const uint8_t *aad, int aad_len, uint8_t *buf, int length) noexcept nogil:
    """Encrypts buf[0:length] in place and appends the tag at buf[length]. 0, or -1 on error.

    The caller owns buf and guarantees TAG_BYTES of room after it.
    """
    cdef uint8_t nonce[NONCE_BYTES]
    cdef int outl
    make_nonce(nonce, counter)
    if EVP_EncryptInit_ex(ctx, EVP_chacha20_poly1305(), NULL, key, nonce) != 1:
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
    if EVP_DecryptInit_ex(ctx, EVP_chacha20_poly1305(), NULL, key, nonce) != 1:
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
