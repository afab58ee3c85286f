# The tunnels' AEADs in place, without the GIL: ChaCha20-Poly1305 (RFC 8439) as its
# construction over OpenSSL's ChaCha20 and Poly1305, and AES-256-GCM as libgcrypt's
# cipher. The readable twin is the `cryptography` package; tests compare the two (every
# length, AAD, key switches, tampering, the borrowed scratch).
#
# Why AES-256-GCM from libgcrypt: it has VAES/VPCLMULQDQ code for CPUs that have those
# (AVX2 width), which Debian 12's OpenSSL 3.0 lacks; and its per-packet calls are lean.
# One core here, 1,408 / 64 bytes: libgcrypt 1.10 seals in 0.42 / 0.12 us and opens in
# 0.46 / 0.14 us; OpenSSL 3.0's EVP cipher 0.66 / 0.27 and 0.69 / 0.25 us (its provider's
# functions called directly, without EVP's per-packet parameter plumbing, 0.58 / 0.18 and
# 0.59 / 0.17 us). ChaCha20-Poly1305 costs 1.02 / 0.29 and 1.13 / 0.41 us here either way.
#
# Why not OpenSSL's own ChaCha20-Poly1305 cipher: per packet it costs a separate
# one-block ChaCha20 call for the Poly1305 key, and OpenSSL 3's parameter plumbing (IV
# length lookups, the tag as a parameter); at 1,408 bytes 1.17 us against 1.00 us for
# this construction, at 64 bytes 0.47 against 0.29 us (one core here, best of five).
# Sealing gets the Poly1305 key from the same ChaCha20 call as the ciphertext: block 0
# of the keystream is XORed into SEAL_SCRATCH zeroed bytes just before the plaintext,
# which seal borrows from the caller's buffer and puts back. Opening must authenticate
# before it decrypts, so it runs block 0 on its own.
from libc.stdint cimport uint8_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memcpy, memset

from .includes.openssl cimport (EVP_CIPHER, EVP_CIPHER_CTX, EVP_CIPHER_CTX_free,
                                EVP_CIPHER_CTX_new, EVP_CIPHER_fetch, EVP_CIPHER_free,
                                EVP_CipherInit_ex, EVP_EncryptUpdate, EVP_MAC, EVP_MAC_CTX,
                                EVP_MAC_CTX_free, EVP_MAC_CTX_new, EVP_MAC_fetch, EVP_MAC_final,
                                EVP_MAC_free, EVP_MAC_init, EVP_MAC_update, CRYPTO_memcmp,
                                OPENSSL_cleanse)
from .includes.gcrypt cimport (GCRY_CIPHER_AES256, GCRY_CIPHER_MODE_GCM, GCRYCTL_DISABLE_SECMEM,
                               GCRYCTL_INITIALIZATION_FINISHED,
                               GCRYCTL_INITIALIZATION_FINISHED_P, gcry_check_version,
                               gcry_cipher_authenticate, gcry_cipher_checktag,
                               gcry_cipher_close, gcry_cipher_decrypt, gcry_cipher_encrypt,
                               gcry_cipher_gettag, gcry_cipher_hd_t, gcry_cipher_open,
                               gcry_cipher_setiv, gcry_cipher_setkey, gcry_control)

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


cdef inline uint8_t *sealable_alloc(size_t size) noexcept nogil:
    """`size` bytes to seal in, with SEAL_SCRATCH more before them; NULL if out of
    memory. Free with sealable_free."""
    cdef uint8_t *p = <uint8_t *>malloc(size + SEAL_SCRATCH)
    return p + SEAL_SCRATCH if p != NULL else NULL


cdef inline void sealable_free(uint8_t *buf) noexcept nogil:
    if buf != NULL:
        free(buf - SEAL_SCRATCH)


cdef inline int cipher_init(KeyedCipher *c, const char *name, int enc) noexcept nogil:
    cdef EVP_CIPHER *cipher = EVP_CIPHER_fetch(NULL, name, NULL)
    c.keyed = 0
    c.ctx = EVP_CIPHER_CTX_new()
    cdef int ok = cipher != NULL and c.ctx != NULL \
        and EVP_CipherInit_ex(c.ctx, cipher, NULL, NULL, NULL, enc) == 1
    EVP_CIPHER_free(cipher)   # the context keeps its own reference
    return 0 if ok else -1


cdef inline void cipher_free(KeyedCipher *c) noexcept nogil:
    EVP_CIPHER_CTX_free(c.ctx)
    c.ctx = NULL
    c.keyed = 0
    OPENSSL_cleanse(c.key, KEY_BYTES)


cdef inline int gcm_init(GcmCipher *c) noexcept nogil:
    c.keyed = 0
    c.hd = NULL
    # libgcrypt wants initializing once per process before use; nothing here uses its
    # secure memory (keys live in the engine's own memory, wiped when freed).
    if gcry_check_version(NULL) == NULL:
        return -1
    if not gcry_control(GCRYCTL_INITIALIZATION_FINISHED_P):
        gcry_control(GCRYCTL_DISABLE_SECMEM, 0)
        gcry_control(GCRYCTL_INITIALIZATION_FINISHED, 0)
    return 0 if gcry_cipher_open(&c.hd, GCRY_CIPHER_AES256, GCRY_CIPHER_MODE_GCM, 0) == 0 \
        else -1


cdef inline void gcm_free(GcmCipher *c) noexcept nogil:
    if c.hd != NULL:
        gcry_cipher_close(c.hd)       # libgcrypt wipes the key schedule
    c.hd = NULL
    c.keyed = 0
    OPENSSL_cleanse(c.key, KEY_BYTES)


cdef inline int aead_init(Aead *a) noexcept nogil:
    """Makes the contexts (no key yet). 0, or -1; aead_free it either way."""
    cdef EVP_MAC *mac = EVP_MAC_fetch(NULL, b"POLY1305", NULL)
    a.mac = EVP_MAC_CTX_new(mac) if mac != NULL else NULL
    EVP_MAC_free(mac)
    cdef int rc = cipher_init(&a.chacha, b"ChaCha20", 1)
    rc |= gcm_init(&a.gcm_seal)
    rc |= gcm_init(&a.gcm_open)
    if rc < 0 or a.mac == NULL:
        aead_free(a)
        return -1
    return 0


cdef inline void aead_free(Aead *a) noexcept nogil:
    cipher_free(&a.chacha)
    gcm_free(&a.gcm_seal)
    gcm_free(&a.gcm_open)
    EVP_MAC_CTX_free(a.mac)
    a.mac = NULL


cdef inline int cipher_start(KeyedCipher *c, const uint8_t *key,
                             const uint8_t *iv) noexcept nogil:
    """Points the context at `iv`; sets the key only if it changed."""
    cdef const uint8_t *new_key = NULL
    if not c.keyed or memcmp(c.key, key, KEY_BYTES) != 0:
        new_key = key
    cdef int ok = EVP_CipherInit_ex(c.ctx, NULL, NULL, new_key, iv, -1) == 1
    if not ok:
        c.keyed = 0
    elif new_key != NULL:
        memcpy(c.key, key, KEY_BYTES)
        c.keyed = 1
    return 0 if ok else -1


cdef inline int gcm_start(GcmCipher *c, const uint8_t *key, const uint8_t *iv) noexcept nogil:
    """Starts a message at `iv` (which resets GCM's state); sets the key only if it
    changed."""
    if not c.keyed or memcmp(c.key, key, KEY_BYTES) != 0:
        c.keyed = 0
        if gcry_cipher_setkey(c.hd, key, KEY_BYTES) != 0:
            return -1
        memcpy(c.key, key, KEY_BYTES)
        c.keyed = 1
    return 0 if gcry_cipher_setiv(c.hd, iv, NONCE_BYTES) == 0 else -1


cdef inline void packet_nonce(uint8_t *nonce, uint64_t counter) noexcept nogil:
    """A packet's 96-bit nonce: 32 zero bits, then its 64-bit counter little-endian
    (WireGuard's), for either AEAD."""
    cdef int i
    memset(nonce, 0, 4)
    for i in range(8):
        nonce[4 + i] = <uint8_t>(counter >> (8 * i))


cdef inline int start_stream(Aead *a, const uint8_t *key, uint64_t counter) noexcept nogil:
    """Points the ChaCha20 stream at block 0 of packet `counter`'s nonce."""
    cdef uint8_t iv[4 + NONCE_BYTES]   # OpenSSL's ChaCha20 IV: block counter, then nonce
    memset(iv, 0, 4)
    packet_nonce(iv + 4, counter)
    return cipher_start(&a.chacha, key, iv)


cdef inline int poly1305_tag(Aead *a, const uint8_t *poly_key, const uint8_t *aad,
                             int aad_len, const uint8_t *data, int length,
                             uint8_t *tag) noexcept nogil:
    """RFC 8439's tag: Poly1305 over AAD, pad, ciphertext, pad, both lengths (64-bit LE).
    AAD of a multiple of 16 bytes right before the ciphertext (a datagram's header) goes
    in one update with it."""
    cdef uint8_t trailer[32]           # up to 15 zero bytes of pad, then the lengths
    cdef size_t outl
    cdef int pad, i
    if EVP_MAC_init(a.mac, poly_key, 32, NULL) != 1:
        return -1
    if aad_len % 16 == 0 and aad + aad_len == data:
        if EVP_MAC_update(a.mac, aad, aad_len + length) != 1:
            return -1
    else:
        memset(trailer, 0, 16)
        pad = (16 - aad_len % 16) % 16
        if (aad_len and EVP_MAC_update(a.mac, aad, aad_len) != 1) or \
                (pad and EVP_MAC_update(a.mac, trailer, pad) != 1) or \
                (length and EVP_MAC_update(a.mac, data, length) != 1):
            return -1
    memset(trailer, 0, 16)
    for i in range(8):
        trailer[16 + i] = <uint8_t>(<uint64_t>aad_len >> (8 * i))
        trailer[24 + i] = <uint8_t>(<uint64_t>length >> (8 * i))
    pad = (16 - length % 16) % 16
    if EVP_MAC_update(a.mac, trailer + 16 - pad, pad + 16) != 1 or \
            EVP_MAC_final(a.mac, tag, &outl, TAG_BYTES) != 1:
        return -1
    return 0


cdef inline int chacha_seal(Aead *a, const uint8_t *key, uint64_t counter,
                            const uint8_t *aad, int aad_len, uint8_t *buf,
                            int length) noexcept nogil:
    cdef uint8_t saved[SEAL_SCRATCH]
    cdef uint8_t poly_key[32]
    cdef uint8_t *block0 = buf - SEAL_SCRATCH
    cdef int outl, rc = -1
    if start_stream(a, key, counter) < 0:
        return -1
    memcpy(saved, block0, SEAL_SCRATCH)
    memset(block0, 0, SEAL_SCRATCH)
    if EVP_EncryptUpdate(a.chacha.ctx, block0, &outl, block0, SEAL_SCRATCH + length) == 1:
        memcpy(poly_key, block0, 32)
        rc = 0
    memcpy(block0, saved, SEAL_SCRATCH)
    if rc == 0:
        rc = poly1305_tag(a, poly_key, aad, aad_len, buf, length, buf + length)
    OPENSSL_cleanse(poly_key, 32)
    return rc


cdef inline int chacha_open(Aead *a, const uint8_t *key, uint64_t counter,
                            const uint8_t *aad, int aad_len, uint8_t *buf,
                            int plain) noexcept nogil:
    cdef uint8_t block0[BLOCK_BYTES]
    cdef uint8_t tag[TAG_BYTES]
    cdef int outl, rc = -1
    if start_stream(a, key, counter) < 0:
        return -1
    memset(block0, 0, BLOCK_BYTES)
    if EVP_EncryptUpdate(a.chacha.ctx, block0, &outl, block0, BLOCK_BYTES) == 1 and \
            poly1305_tag(a, block0, aad, aad_len, buf, plain, tag) == 0 and \
            CRYPTO_memcmp(tag, buf + plain, TAG_BYTES) == 0 and \
            (plain == 0 or EVP_EncryptUpdate(a.chacha.ctx, buf, &outl, buf, plain) == 1):
        rc = plain
    OPENSSL_cleanse(block0, BLOCK_BYTES)
    return rc


cdef inline int gcm_seal(Aead *a, const uint8_t *key, uint64_t counter,
                         const uint8_t *aad, int aad_len, uint8_t *buf, int head,
                         const uint8_t *tail, int tail_len) noexcept nogil:
    cdef uint8_t iv[NONCE_BYTES]
    cdef gcry_cipher_hd_t hd = a.gcm_seal.hd
    packet_nonce(iv, counter)
    if gcm_start(&a.gcm_seal, key, iv) < 0 or \
            (aad_len and gcry_cipher_authenticate(hd, aad, aad_len) != 0) or \
            gcry_cipher_encrypt(hd, buf, head, NULL, 0) != 0 or \
            (tail_len and gcry_cipher_encrypt(hd, buf + head, tail_len, tail, tail_len) != 0) \
            or gcry_cipher_gettag(hd, buf + head + tail_len, TAG_BYTES) != 0:
        return -1
    return 0


cdef inline int gcm_open(Aead *a, const uint8_t *key, uint64_t counter,
                         const uint8_t *aad, int aad_len, uint8_t *buf,
                         int plain) noexcept nogil:
    cdef uint8_t iv[NONCE_BYTES]
    cdef gcry_cipher_hd_t hd = a.gcm_open.hd
    packet_nonce(iv, counter)
    if gcm_start(&a.gcm_open, key, iv) < 0 or \
            (aad_len and gcry_cipher_authenticate(hd, aad, aad_len) != 0) or \
            gcry_cipher_decrypt(hd, buf, plain, NULL, 0) != 0:
        return -1
    if gcry_cipher_checktag(hd, buf + plain, TAG_BYTES) != 0:
        # GCM decrypts as it authenticates: what it wrote is unauthenticated. Wipe it
        # (the caller drops the datagram anyway).
        memset(buf, 0, plain)
        return -1
    return plain


cdef inline int seal(Aead *a, int suite, const uint8_t *key, uint64_t counter,
                     const uint8_t *aad, int aad_len, uint8_t *buf, int length) noexcept nogil:
    """Encrypts buf[0:length] in place under `suite` and appends the tag at buf[length].
    0, or -1 on error.

    The caller owns buf, TAG_BYTES of room after it and SEAL_SCRATCH bytes before it
    (borrowed, and restored before seal returns: the AAD may lie there).
    """
    return seal_split(a, suite, key, counter, aad, aad_len, buf, length, NULL, 0)


cdef inline int seal_split(Aead *a, int suite, const uint8_t *key, uint64_t counter,
                           const uint8_t *aad, int aad_len, uint8_t *buf, int head,
                           const uint8_t *tail, int tail_len) noexcept nogil:
    """seal() of the plaintext buf[0:head] + tail[0:tail_len], its ciphertext written to
    buf[0:head + tail_len] (tag after it): a segment's headers, made in place, and its
    payload, still in the super-packet it is cut from, sealed in one pass over each."""
    if suite == SUITE_AES_256_GCM:
        return gcm_seal(a, key, counter, aad, aad_len, buf, head, tail, tail_len)
    if tail_len:
        memcpy(buf + head, tail, tail_len)   # the construction seals in place only
    return chacha_seal(a, key, counter, aad, aad_len, buf, head + tail_len)


cdef inline int open_in_place(Aead *a, int suite, const uint8_t *key, uint64_t counter,
                              const uint8_t *aad, int aad_len, uint8_t *buf,
                              int length) noexcept nogil:
    """Checks and decrypts buf[0:length] (ciphertext + tag) in place.

    Returns the plaintext length, or -1 if the tag does not verify. ChaCha20-Poly1305
    then leaves buf as it was (it authenticates before it decrypts); AES-GCM leaves the
    plaintext's bytes zeroed.
    """
    cdef int plain = length - TAG_BYTES
    if plain < 0:
        return -1
    if suite == SUITE_AES_256_GCM:
        return gcm_open(a, key, counter, aad, aad_len, buf, plain)
    return chacha_open(a, key, counter, aad, aad_len, buf, plain)
