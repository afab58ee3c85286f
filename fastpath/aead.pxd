# ChaCha20-Poly1305 (RFC 8439) in place, through OpenSSL's EVP interface, without the GIL.
# The readable twin is the `cryptography` package; tests compare the two.
#
# A context is bound to the cipher once (aead_init); per packet only the nonce is set, and
# the key only when it is not the one the context already holds. Naming the cipher on
# every init made OpenSSL 3 look it up in its provider store and rebuild the context each
# time (half of the sealing cost at 1,400-byte packets); setting the same key again costs
# ~60 ns a packet, and the tag goes through a prepared parameter instead of a ctrl call
# that OpenSSL turns into one.
from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memcmp, memcpy, memset

from .includes.openssl cimport (EVP_CIPHER, EVP_CIPHER_CTX, EVP_CIPHER_CTX_free,
                                EVP_CIPHER_CTX_get_params, EVP_CIPHER_CTX_new,
                                EVP_CIPHER_CTX_set_params, EVP_CIPHER_fetch, EVP_CIPHER_free,
                                EVP_DecryptFinal_ex, EVP_DecryptInit_ex, EVP_DecryptUpdate,
                                EVP_EncryptFinal_ex, EVP_EncryptInit_ex, EVP_EncryptUpdate,
                                OPENSSL_cleanse, OSSL_CIPHER_PARAM_AEAD_TAG, OSSL_PARAM,
                                OSSL_PARAM_construct_end, OSSL_PARAM_construct_octet_string)

cdef enum:
    KEY_BYTES = 32
    TAG_BYTES = 16
    NONCE_BYTES = 12


cdef struct Aead:
    EVP_CIPHER_CTX *ctx         # bound to ChaCha20-Poly1305
    int keyed                   # ctx holds `key` (0 after any failed init: set it again)
    uint8_t key[KEY_BYTES]


cdef inline int aead_init(Aead *a) noexcept nogil:
    """Binds a fresh context to ChaCha20-Poly1305 (no key yet). 0, or -1; aead_free it."""
    cdef EVP_CIPHER *cipher = EVP_CIPHER_fetch(NULL, b"ChaCha20-Poly1305", NULL)
    a.keyed = 0
    a.ctx = EVP_CIPHER_CTX_new()
    cdef int ok = cipher != NULL and a.ctx != NULL \
        and EVP_EncryptInit_ex(a.ctx, cipher, NULL, NULL, NULL) == 1
    EVP_CIPHER_free(cipher)   # the context keeps its own reference
    if not ok:
        aead_free(a)
        return -1
    return 0


cdef inline void aead_free(Aead *a) noexcept nogil:
    EVP_CIPHER_CTX_free(a.ctx)
    a.ctx = NULL
    a.keyed = 0
    OPENSSL_cleanse(a.key, KEY_BYTES)


cdef inline const uint8_t *key_to_set(Aead *a, const uint8_t *key) noexcept nogil:
    """`key`, or NULL if the context holds it already (the init then keeps it)."""
    if a.keyed and memcmp(a.key, key, KEY_BYTES) == 0:
        return NULL
    return key


cdef inline void key_set(Aead *a, const uint8_t *key, int ok) noexcept nogil:
    """Records what an init with key_to_set's answer left in the context."""
    if not ok:
        a.keyed = 0
    elif key != NULL:
        memcpy(a.key, key, KEY_BYTES)
        a.keyed = 1


cdef inline void tag_param(OSSL_PARAM *params, uint8_t *tag) noexcept nogil:
    """params: the AEAD tag at `tag` (TAG_BYTES), read or set without a ctrl call."""
    params[0] = OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, tag, TAG_BYTES)
    params[1] = OSSL_PARAM_construct_end()


cdef inline void make_nonce(uint8_t *nonce, uint64_t counter) noexcept nogil:
    """96-bit nonce: 32 zero bits, then the 64-bit packet counter little-endian (as WireGuard)."""
    cdef int i
    memset(nonce, 0, 4)
    for i in range(8):
        nonce[4 + i] = <uint8_t>(counter >> (8 * i))


cdef inline int seal(Aead *a, const uint8_t *key, uint64_t counter,
                     const uint8_t *aad, int aad_len, uint8_t *buf, int length) noexcept nogil:
    """Encrypts buf[0:length] in place and appends the tag at buf[length]. 0, or -1 on
    error.

    The caller owns buf and guarantees TAG_BYTES of room after it.
    """
    cdef uint8_t nonce[NONCE_BYTES]
    cdef int outl
    cdef OSSL_PARAM tag[2]
    cdef const uint8_t *new_key = key_to_set(a, key)
    make_nonce(nonce, counter)
    cdef int ok = EVP_EncryptInit_ex(a.ctx, NULL, NULL, new_key, nonce) == 1
    key_set(a, new_key, ok)
    if not ok:
        return -1
    if aad_len and EVP_EncryptUpdate(a.ctx, NULL, &outl, aad, aad_len) != 1:
        return -1
    if length and EVP_EncryptUpdate(a.ctx, buf, &outl, buf, length) != 1:
        return -1
    if EVP_EncryptFinal_ex(a.ctx, buf + length, &outl) != 1:
        return -1
    tag_param(tag, buf + length)
    if EVP_CIPHER_CTX_get_params(a.ctx, tag) != 1:
        return -1
    return 0


cdef inline int open_in_place(Aead *a, const uint8_t *key, uint64_t counter,
                              const uint8_t *aad, int aad_len, uint8_t *buf,
                              int length) noexcept nogil:
    """Checks and decrypts buf[0:length] (ciphertext + tag) in place.

    Returns the plaintext length, or -1 if the tag does not verify (nothing to trust then).
    """
    cdef uint8_t nonce[NONCE_BYTES]
    cdef int outl
    cdef OSSL_PARAM tag[2]
    cdef int plain = length - TAG_BYTES
    if plain < 0:
        return -1
    cdef const uint8_t *new_key = key_to_set(a, key)
    make_nonce(nonce, counter)
    cdef int ok = EVP_DecryptInit_ex(a.ctx, NULL, NULL, new_key, nonce) == 1
    key_set(a, new_key, ok)
    if not ok:
        return -1
    tag_param(tag, buf + plain)
    if EVP_CIPHER_CTX_set_params(a.ctx, tag) != 1:
        return -1
    if aad_len and EVP_DecryptUpdate(a.ctx, NULL, &outl, aad, aad_len) != 1:
        return -1
    if plain and EVP_DecryptUpdate(a.ctx, buf, &outl, buf, plain) != 1:
        return -1
    if EVP_DecryptFinal_ex(a.ctx, buf + plain, &outl) != 1:
        return -1
    return plain
