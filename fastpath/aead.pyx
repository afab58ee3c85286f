"""The tunnels' AEADs in place, without the GIL (declared in aead.pxd, called by the
engine's pumps), and Python entry points to them for tests and tools (never on the data
path).

ChaCha20-Poly1305 (RFC 8439) is built here over OpenSSL's ChaCha20 and Poly1305;
AES-256-GCM is libgcrypt's cipher. The readable twin is the `cryptography` package;
tests compare the two (every length, AAD, key switches, tampering, the borrowed scratch).
"""

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
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

from .includes.gcrypt cimport (GCRY_CIPHER_AES256, GCRY_CIPHER_MODE_GCM, GCRYCTL_DISABLE_SECMEM,
                               GCRYCTL_INITIALIZATION_FINISHED,
                               GCRYCTL_INITIALIZATION_FINISHED_P, gcry_check_version,
                               gcry_cipher_authenticate, gcry_cipher_checktag,
                               gcry_cipher_close, gcry_cipher_decrypt, gcry_cipher_encrypt,
                               gcry_cipher_gettag, gcry_cipher_open,
                               gcry_cipher_setiv, gcry_cipher_setkey, gcry_control)
from .includes.openssl cimport (EVP_CIPHER, EVP_CIPHER_CTX_free, EVP_CIPHER_CTX_new,
                                EVP_CIPHER_fetch, EVP_CIPHER_free, EVP_CipherInit_ex,
                                EVP_EncryptUpdate, EVP_MAC, EVP_MAC_CTX_free, EVP_MAC_CTX_new,
                                EVP_MAC_fetch, EVP_MAC_final, EVP_MAC_free, EVP_MAC_init,
                                EVP_MAC_update, CRYPTO_memcmp, OPENSSL_cleanse)


cdef uint8_t *sealable_alloc(size_t size) noexcept nogil:
    """`size` bytes to seal in, with SEAL_SCRATCH more before them; NULL if out of
    memory. Free with sealable_free."""
    cdef uint8_t *p = <uint8_t *>malloc(size + SEAL_SCRATCH)
    return p + SEAL_SCRATCH if p != NULL else NULL


cdef void sealable_free(uint8_t *buf) noexcept nogil:
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


cdef int aead_init(Aead *a) noexcept nogil:
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


cdef void aead_free(Aead *a) noexcept nogil:
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


cdef int seal(Aead *a, int suite, const uint8_t *key, uint64_t counter,
              const uint8_t *aad, int aad_len, uint8_t *buf, int length) noexcept nogil:
    """Encrypts buf[0:length] in place under `suite` and appends the tag at buf[length].
    0, or -1 on error.

    The caller owns buf, TAG_BYTES of room after it and SEAL_SCRATCH bytes before it
    (borrowed, and restored before seal returns: the AAD may lie there).
    """
    return seal_split(a, suite, key, counter, aad, aad_len, buf, length, NULL, 0)


cdef int seal_split(Aead *a, int suite, const uint8_t *key, uint64_t counter,
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


cdef int open_in_place(Aead *a, int suite, const uint8_t *key, uint64_t counter,
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


# -- Python entry points (tests and tools) --------------------------------------------

# The names the control plane agrees on, by the engine's suite number.
AEADS = {"chacha20-poly1305": SUITE_CHACHA20_POLY1305, "aes-256-gcm": SUITE_AES_256_GCM}


class AeadError(ValueError):
    pass


def suite_of(str aead):
    """The engine's number for an AEAD name; AeadError naming the known ones if unknown."""
    try:
        return AEADS[aead]
    except KeyError:
        raise AeadError(f"unknown AEAD {aead!r} (known: {', '.join(AEADS)})") from None


def seal_packet(const uint8_t[::1] key, uint64_t counter, const uint8_t[::1] aad,
                const uint8_t[::1] plaintext, str aead="chacha20-poly1305"):
    """ciphertext + tag of `plaintext`, exactly as the engine seals it."""
    if key.shape[0] != 32:
        raise AeadError("key must be 32 bytes")
    buf = bytearray(SEAL_SCRATCH) + plaintext + bytearray(TAG_BYTES)
    cdef uint8_t[::1] out = buf
    cdef int suite = suite_of(aead)
    cdef Aead a
    cdef int rc
    if aead_init(&a) < 0:
        raise MemoryError()
    try:
        rc = seal(&a, suite, &key[0], counter, &aad[0] if aad.shape[0] else NULL, aad.shape[0],
                  &out[SEAL_SCRATCH], plaintext.shape[0])
    finally:
        aead_free(&a)
    if rc < 0:
        raise AeadError("seal failed")
    return bytes(buf[SEAL_SCRATCH:])


def seal_in_buffer(const uint8_t[::1] key, uint64_t counter, uint8_t[::1] buf, int aad_at,
                   int aad_len, int length, str aead="chacha20-poly1305"):
    """Seals buf[aad_at + aad_len:][:length] in place, tag after it, with buf[aad_at:][:aad_len]
    as AAD: the engine's layout (a datagram's header right before its payload, other
    datagrams around it), for tests of what seal leaves untouched."""
    cdef int start = aad_at + aad_len
    if key.shape[0] != 32:
        raise AeadError("key must be 32 bytes")
    if aad_at < 0 or aad_len < 0 or length < 0 or start < SEAL_SCRATCH \
            or start + length + TAG_BYTES > buf.shape[0]:
        raise AeadError(f"the buffer needs {SEAL_SCRATCH} bytes before the payload and "
                        f"{TAG_BYTES} after it")
    cdef int suite = suite_of(aead)
    cdef Aead a
    cdef int rc
    if aead_init(&a) < 0:
        raise MemoryError()
    try:
        rc = seal(&a, suite, &key[0], counter, &buf[aad_at], aad_len, &buf[start], length)
    finally:
        aead_free(&a)
    if rc < 0:
        raise AeadError("seal failed")


def open_packet(const uint8_t[::1] key, uint64_t counter, const uint8_t[::1] aad,
                const uint8_t[::1] sealed, str aead="chacha20-poly1305"):
    """The plaintext of `sealed` (ciphertext + tag); AeadError if it does not authenticate."""
    if key.shape[0] != 32:
        raise AeadError("key must be 32 bytes")
    buf = bytearray(sealed)
    if len(buf) < TAG_BYTES:
        raise AeadError("shorter than a tag")
    cdef uint8_t[::1] data = buf
    cdef int suite = suite_of(aead)
    cdef Aead a
    cdef int n
    if aead_init(&a) < 0:
        raise MemoryError()
    try:
        n = open_in_place(&a, suite, &key[0], counter, &aad[0] if aad.shape[0] else NULL,
                          aad.shape[0], &data[0], data.shape[0])
    finally:
        aead_free(&a)
    if n < 0:
        raise AeadError("authentication failed")
    return bytes(buf[:n])


def crypt_sequence(ops):
    """Runs ("seal" | "open", aead, key, counter, aad, data) operations one after another
    through one context, as an engine's worker does (AEADs and keys switch between wires
    and directions): each seal's sealed bytes, each open's plaintext or None if it did
    not authenticate."""
    cdef Aead a
    cdef uint8_t[::1] view
    cdef bytes key_b, aad_b
    cdef const uint8_t *aad_p
    cdef int n, suite
    if aead_init(&a) < 0:
        raise MemoryError()
    results = []
    try:
        for op, aead, key, counter, aad, data in ops:
            suite = suite_of(aead)
            key_b, aad_b = bytes(key), bytes(aad)
            if len(key_b) != 32:
                raise AeadError("key must be 32 bytes")
            aad_p = NULL
            if aad_b:
                aad_p = aad_b
            buf = bytearray(data) + (bytearray(TAG_BYTES) if op == "seal" else bytearray())
            if len(buf) < TAG_BYTES:  # an open of less than a tag: nothing to open
                results.append(None)
                continue
            if op == "seal":
                buf = bytearray(SEAL_SCRATCH) + buf
                view = buf
                n = seal(&a, suite, key_b, counter, aad_p, len(aad_b), &view[SEAL_SCRATCH],
                         len(data))
                results.append(bytes(buf[SEAL_SCRATCH:]) if n == 0 else None)
            else:
                view = buf
                n = open_in_place(&a, suite, key_b, counter, aad_p, len(aad_b), &view[0],
                                  len(buf))
                results.append(bytes(buf[:n]) if n >= 0 else None)
    finally:
        aead_free(&a)
    return results


def aead_seconds(str op, int size, int count, str aead="chacha20-poly1305"):
    """Seconds to seal ("seal") or open ("open") `count` datagrams of `size` payload
    bytes under `aead` one after another the engine's way (one context, the header as AAD right
    before the payload, the key set once), for benchmarks. Each open works on a fresh
    copy of one sealed datagram: the copy is in the time (a few percent)."""
    if op not in ("seal", "open") or size < 0 or count < 1:
        raise ValueError('op "seal" or "open", size >= 0 and count >= 1')
    buf = bytearray(SEAL_SCRATCH + size + TAG_BYTES)   # header in the scratch, as a datagram
    cdef uint8_t[::1] data = buf
    cdef uint8_t key[32]
    cdef Aead a
    cdef int i, rc = 0, total = 16 + size + TAG_BYTES
    cdef bint opening = op == "open"
    cdef int suite = suite_of(aead)
    cdef timespec start, end
    if aead_init(&a) < 0:
        raise MemoryError()
    for i in range(32):
        key[i] = <uint8_t>i
    cdef uint8_t *dgram = &data[SEAL_SCRATCH - 16]
    cdef uint8_t *sealed = <uint8_t *>malloc(total)
    if sealed == NULL:
        aead_free(&a)
        raise MemoryError()
    if opening:
        rc = seal(&a, suite, key, 7, dgram, 16, dgram + 16, size)
        memcpy(sealed, dgram, total)
    with nogil:
        clock_gettime(CLOCK_MONOTONIC, &start)
        for i in range(count):
            if opening:
                memcpy(dgram, sealed, total)
                rc |= open_in_place(&a, suite, key, 7, dgram, 16, dgram + 16,
                                    size + TAG_BYTES) != size
            else:
                rc |= seal(&a, suite, key, <uint64_t>i, dgram, 16, dgram + 16, size)
        clock_gettime(CLOCK_MONOTONIC, &end)
    free(sealed)
    aead_free(&a)
    if rc:
        raise AeadError(f"{op} failed")
    return (end.tv_sec - start.tv_sec) + (end.tv_nsec - start.tv_nsec) * 1e-9
