"""Python entry points to the fast path's AEAD, for tests and tools (never on the data path)."""

from libc.stdint cimport uint8_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

from .aead cimport (SEAL_SCRATCH, SUITE_AES_256_GCM, SUITE_CHACHA20_POLY1305, TAG_BYTES, Aead,
                   aead_free, aead_init, open_in_place, seal)

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
