# The tunnels' AEADs in place, without the GIL: ChaCha20-Poly1305 (RFC 8439) as its
# construction over OpenSSL's ChaCha20 and Poly1305, and AES-256-GCM as OpenSSL's cipher
# (where the CPU has AES and carry-less multiply instructions it costs ~60 % of
# ChaCha20-Poly1305 here: seal 0.68 against 1.02 us, open 0.64 against 1.11 us at 1,408
# bytes). The readable twin is the `cryptography` package; tests compare the two (every
# length, AAD, key switches, tampering, the borrowed scratch).
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
from libc.string cimport memcmp, memcpy, memset, strlen
from posix.strings cimport strncasecmp

from .includes.openssl cimport (EVP_CIPHER, EVP_CIPHER_CTX, EVP_CIPHER_CTX_free,
                                EVP_CIPHER_CTX_new, EVP_CIPHER_fetch, EVP_CIPHER_free,
                                EVP_CIPHER_get0_provider, EVP_CipherInit_ex,
                                EVP_EncryptUpdate, EVP_MAC, EVP_MAC_CTX,
                                EVP_MAC_CTX_free, EVP_MAC_CTX_new, EVP_MAC_fetch, EVP_MAC_final,
                                EVP_MAC_free, EVP_MAC_init, EVP_MAC_update, CRYPTO_memcmp,
                                OPENSSL_cleanse, OSSL_ALGORITHM, OSSL_DISPATCH, OSSL_OP_CIPHER,
                                OSSL_FUNC_CIPHER_DECRYPT_INIT, OSSL_FUNC_CIPHER_ENCRYPT_INIT,
                                OSSL_FUNC_CIPHER_FINAL, OSSL_FUNC_CIPHER_FREECTX,
                                OSSL_FUNC_CIPHER_GET_CTX_PARAMS, OSSL_FUNC_CIPHER_NEWCTX,
                                OSSL_FUNC_CIPHER_SET_CTX_PARAMS, OSSL_FUNC_CIPHER_UPDATE,
                                OSSL_PARAM, OSSL_PARAM_construct_end,
                                OSSL_PARAM_construct_octet_string, OSSL_PROVIDER,
                                OSSL_PROVIDER_get0_provider_ctx, OSSL_PROVIDER_query_operation,
                                OSSL_PROVIDER_unquery_operation, OSSL_CIPHER_PARAM_AEAD_TAG,
                                cipher_final_fn, cipher_freectx_fn, cipher_get_params_fn,
                                cipher_init_fn, cipher_newctx_fn, cipher_set_params_fn,
                                cipher_update_fn)

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


# AES-256-GCM is called through its provider's own functions (provider-cipher(7)), as
# the EVP layer calls them, minus that layer: per packet EVP adds an IV-length lookup
# and the tag's translation from ctrl to parameters, ~0.11 of 0.27 us at 64 bytes and of
# 0.66 us at 1,408 (seal and open alike, one core here; OpenSSL 3.0). Same provider,
# same cipher code: the EVP cipher it would use is fetched, and its provider's dispatch
# table read once per Aead.
cdef struct GcmFunctions:
    EVP_CIPHER *cipher          # held: keeps the provider, and so its table, loaded
    void *provctx
    cipher_newctx_fn newctx
    cipher_freectx_fn freectx
    cipher_init_fn encrypt_init
    cipher_init_fn decrypt_init
    cipher_update_fn update
    cipher_final_fn final
    cipher_get_params_fn get_params
    cipher_set_params_fn set_params


cdef struct GcmContext:
    void *cctx
    int keyed                   # cctx holds `key` (0 after any failed init: set it again)
    uint8_t key[KEY_BYTES]


cdef struct Aead:
    KeyedCipher chacha          # ChaCha20 for both directions: keying it costs nothing
    EVP_MAC_CTX *mac            # Poly1305, keyed per packet
    GcmFunctions gcm
    # AES-256-GCM, one context per direction: keying one expands the AES key and GHASH's
    # table (~0.2 us), so a worker sealing and opening one vWire's packets keeps both.
    GcmContext gcm_seal
    GcmContext gcm_open


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


cdef inline bint names_include(const char *names, const char *name) noexcept nogil:
    """Whether `name` is one of a provider algorithm's colon-separated names."""
    cdef size_t n = strlen(name)
    while names[0] != 0:
        if strncasecmp(names, name, n) == 0 and (names[n] == 0 or names[n] == 58):  # ':'
            return True
        while names[0] != 0 and names[0] != 58:
            names += 1
        if names[0] == 58:
            names += 1
    return False


cdef inline int gcm_functions_init(GcmFunctions *g) noexcept nogil:
    """Finds AES-256-GCM's functions in the provider EVP fetches it from. 0, or -1."""
    memset(g, 0, sizeof(GcmFunctions))
    g.cipher = EVP_CIPHER_fetch(NULL, b"AES-256-GCM", NULL)
    if g.cipher == NULL:
        return -1
    cdef const OSSL_PROVIDER *prov = EVP_CIPHER_get0_provider(g.cipher)
    cdef int no_cache
    cdef const OSSL_ALGORITHM *algs = OSSL_PROVIDER_query_operation(prov, OSSL_OP_CIPHER,
                                                                    &no_cache)
    cdef const OSSL_ALGORITHM *alg = algs
    cdef const OSSL_DISPATCH *f
    while alg != NULL and alg.algorithm_names != NULL:
        if names_include(alg.algorithm_names, b"AES-256-GCM"):
            f = alg.implementation
            while f.function_id != 0:
                if f.function_id == OSSL_FUNC_CIPHER_NEWCTX:
                    g.newctx = <cipher_newctx_fn>f.function
                elif f.function_id == OSSL_FUNC_CIPHER_FREECTX:
                    g.freectx = <cipher_freectx_fn>f.function
                elif f.function_id == OSSL_FUNC_CIPHER_ENCRYPT_INIT:
                    g.encrypt_init = <cipher_init_fn>f.function
                elif f.function_id == OSSL_FUNC_CIPHER_DECRYPT_INIT:
                    g.decrypt_init = <cipher_init_fn>f.function
                elif f.function_id == OSSL_FUNC_CIPHER_UPDATE:
                    g.update = <cipher_update_fn>f.function
                elif f.function_id == OSSL_FUNC_CIPHER_FINAL:
                    g.final = <cipher_final_fn>f.function
                elif f.function_id == OSSL_FUNC_CIPHER_GET_CTX_PARAMS:
                    g.get_params = <cipher_get_params_fn>f.function
                elif f.function_id == OSSL_FUNC_CIPHER_SET_CTX_PARAMS:
                    g.set_params = <cipher_set_params_fn>f.function
                f += 1
            break
        alg += 1
    if algs != NULL:
        OSSL_PROVIDER_unquery_operation(prov, OSSL_OP_CIPHER, algs)
    g.provctx = OSSL_PROVIDER_get0_provider_ctx(prov)
    if g.newctx == NULL or g.freectx == NULL or g.encrypt_init == NULL \
            or g.decrypt_init == NULL or g.update == NULL or g.final == NULL \
            or g.get_params == NULL or g.set_params == NULL:
        return -1
    return 0


cdef inline int gcm_context_init(GcmFunctions *g, GcmContext *c) noexcept nogil:
    c.keyed = 0
    c.cctx = g.newctx(g.provctx) if g.newctx != NULL else NULL
    return 0 if c.cctx != NULL else -1


cdef inline void gcm_context_free(GcmFunctions *g, GcmContext *c) noexcept nogil:
    if c.cctx != NULL:
        g.freectx(c.cctx)      # the provider wipes the key schedule
    c.cctx = NULL
    c.keyed = 0
    OPENSSL_cleanse(c.key, KEY_BYTES)


cdef inline int aead_init(Aead *a) noexcept nogil:
    """Makes the contexts (no key yet). 0, or -1; aead_free it either way."""
    a.gcm_seal.cctx = NULL
    a.gcm_open.cctx = NULL
    cdef EVP_MAC *mac = EVP_MAC_fetch(NULL, b"POLY1305", NULL)
    a.mac = EVP_MAC_CTX_new(mac) if mac != NULL else NULL
    EVP_MAC_free(mac)
    cdef int rc = cipher_init(&a.chacha, b"ChaCha20", 1)
    rc |= gcm_functions_init(&a.gcm)
    if rc == 0:
        rc |= gcm_context_init(&a.gcm, &a.gcm_seal)
        rc |= gcm_context_init(&a.gcm, &a.gcm_open)
    if rc < 0 or a.mac == NULL:
        aead_free(a)
        return -1
    return 0


cdef inline void aead_free(Aead *a) noexcept nogil:
    cipher_free(&a.chacha)
    gcm_context_free(&a.gcm, &a.gcm_seal)
    gcm_context_free(&a.gcm, &a.gcm_open)
    EVP_CIPHER_free(a.gcm.cipher)
    a.gcm.cipher = NULL
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


cdef inline int gcm_start(GcmContext *c, cipher_init_fn init, const uint8_t *key,
                          const uint8_t *iv) noexcept nogil:
    """Starts a packet at `iv` (encrypt_init or decrypt_init); sets the key only if it
    changed."""
    cdef const uint8_t *new_key = NULL
    if not c.keyed or memcmp(c.key, key, KEY_BYTES) != 0:
        new_key = key
    cdef int ok = init(c.cctx, new_key, KEY_BYTES if new_key != NULL else 0, iv,
                       NONCE_BYTES, NULL) == 1
    if not ok:
        c.keyed = 0
    elif new_key != NULL:
        memcpy(c.key, key, KEY_BYTES)
        c.keyed = 1
    return 0 if ok else -1


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
                         const uint8_t *aad, int aad_len, uint8_t *buf,
                         int length) noexcept nogil:
    cdef uint8_t iv[NONCE_BYTES]
    cdef GcmFunctions *g = &a.gcm
    cdef void *cctx = a.gcm_seal.cctx
    cdef size_t outl
    cdef OSSL_PARAM tag[2]
    packet_nonce(iv, counter)
    tag[0] = OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, buf + length,
                                               TAG_BYTES)
    tag[1] = OSSL_PARAM_construct_end()
    if gcm_start(&a.gcm_seal, g.encrypt_init, key, iv) < 0 or \
            (aad_len and g.update(cctx, NULL, &outl, aad_len, aad, aad_len) != 1) or \
            (length and g.update(cctx, buf, &outl, length, buf, length) != 1) or \
            g.final(cctx, buf + length, &outl, TAG_BYTES) != 1 or \
            g.get_params(cctx, tag) != 1:
        return -1
    return 0


cdef inline int gcm_open(Aead *a, const uint8_t *key, uint64_t counter,
                         const uint8_t *aad, int aad_len, uint8_t *buf,
                         int plain) noexcept nogil:
    cdef uint8_t iv[NONCE_BYTES]
    cdef uint8_t tag_bytes[TAG_BYTES]
    cdef GcmFunctions *g = &a.gcm
    cdef void *cctx = a.gcm_open.cctx
    cdef size_t outl
    cdef OSSL_PARAM tag[2]
    packet_nonce(iv, counter)
    memcpy(tag_bytes, buf + plain, TAG_BYTES)
    tag[0] = OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, tag_bytes,
                                               TAG_BYTES)
    tag[1] = OSSL_PARAM_construct_end()
    if gcm_start(&a.gcm_open, g.decrypt_init, key, iv) < 0 or \
            g.set_params(cctx, tag) != 1 or \
            (aad_len and g.update(cctx, NULL, &outl, aad_len, aad, aad_len) != 1) or \
            (plain and g.update(cctx, buf, &outl, plain, buf, plain) != 1):
        return -1
    if g.final(cctx, buf + plain, &outl, TAG_BYTES) != 1:
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
    if suite == SUITE_AES_256_GCM:
        return gcm_seal(a, key, counter, aad, aad_len, buf, length)
    return chacha_seal(a, key, counter, aad, aad_len, buf, length)


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
