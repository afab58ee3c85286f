# The tunnels' AEADs in place, without the GIL: ChaCha20-Poly1305 (RFC 8439) and
# AES-256-GCM. What the engine calls; the implementation, and why it is built the way it
# is, are in aead.pyx.

from libc.stdint cimport uint8_t, uint64_t

from .includes.gcrypt cimport gcry_cipher_hd_t
from .includes.openssl cimport EVP_CIPHER_CTX, EVP_MAC_CTX

cdef enum:
    KEY_BYTES = 32
    TAG_BYTES = 16
    NONCE_BYTES = 12
    BLOCK_BYTES = 64
    # Bytes before a sealed plaintext that seal borrows (and restores): every buffer the
    # engine seals in has this much room before its first datagram's payload.
    SEAL_SCRATCH = BLOCK_BYTES
    # The AEADs a keypair may use (the control plane agrees on one per keying).
    SUITE_CHACHA20_POLY1305 = 0
    SUITE_AES_256_GCM = 1
    SUITES = 2


cdef struct KeyedCipher:
    EVP_CIPHER_CTX *ctx
    int keyed                   # ctx holds `key` (0 after any failed init: set it again)
    uint8_t key[KEY_BYTES]


cdef struct GcmCipher:
    gcry_cipher_hd_t hd
    int keyed                   # hd holds `key` (0 after a failed setkey: set it again)
    uint8_t key[KEY_BYTES]


cdef struct Aead:
    KeyedCipher chacha          # ChaCha20 for both directions: keying it costs nothing
    EVP_MAC_CTX *mac            # Poly1305, keyed per packet
    # AES-256-GCM, one handle per direction: keying one expands the AES key and GHASH's
    # table, so a worker sealing and opening one vWire's packets keeps both.
    GcmCipher gcm_seal
    GcmCipher gcm_open


cdef uint8_t *sealable_alloc(size_t size) noexcept nogil
cdef void sealable_free(uint8_t *buf) noexcept nogil
cdef int aead_init(Aead *a) noexcept nogil
cdef void aead_free(Aead *a) noexcept nogil
cdef int seal(Aead *a, int suite, const uint8_t *key, uint64_t counter,
              const uint8_t *aad, int aad_len, uint8_t *buf, int length) noexcept nogil
cdef int seal_split(Aead *a, int suite, const uint8_t *key, uint64_t counter,
                    const uint8_t *aad, int aad_len, uint8_t *buf, int head,
                    const uint8_t *tail, int tail_len) noexcept nogil
cdef int open_in_place(Aead *a, int suite, const uint8_t *key, uint64_t counter,
                       const uint8_t *aad, int aad_len, uint8_t *buf, int length) noexcept nogil
