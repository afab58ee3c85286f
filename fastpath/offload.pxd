# TCP segmentation offload in software, for tunnel wires whose TUN device hands over 64 KiB
# super-packets (IFF_VNET_HDR + TSO): each is cut into MSS-sized segments with their own
# IP and TCP headers and checksums, ready to seal one per datagram. The readable twin is
# fastpath/reference.py (segment); tests compare the two. Checksum and byte-order helpers
# are inline here (used per byte by other modules); the rest lives in offload.pyx.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

cdef enum:
    VNET_HDR_BYTES = 10
    VNET_F_NEEDS_CSUM = 1
    GSO_NONE = 0
    GSO_TCPV4 = 1
    GSO_TCPV6 = 4
    GSO_ECN = 0x80
    TCP_FIN = 0x01
    TCP_PSH = 0x08
    TCP_CWR = 0x80


cdef inline uint16_t be16(const uint8_t *p) noexcept nogil:
    return (<uint16_t>p[0] << 8) | p[1]


cdef inline void put_be16(uint8_t *p, uint16_t v) noexcept nogil:
    p[0] = <uint8_t>(v >> 8)
    p[1] = <uint8_t>v


cdef inline uint16_t le16(const uint8_t *p) noexcept nogil:
    return (<uint16_t>p[1] << 8) | p[0]


cdef inline uint64_t csum_add(uint64_t acc, const uint8_t *p, Py_ssize_t n) noexcept nogil:
    """Adds to `acc` the RFC 1071 sum of p[0:n] as big-endian 16-bit words (an odd last byte
    padded with zero). Eight bytes per step in native order, folded and put in network
    order at the end: a one's-complement sum commutes with swapping the bytes of every
    word (RFC 1071 §2). Byte by byte, this was a fifth of a tunnel's sending CPU."""
    cdef uint64_t total = 0, word, w1, w2, w3, t1 = 0, t2 = 0, t3 = 0
    cdef uint32_t half
    cdef uint16_t pair, probe = 1
    cdef Py_ssize_t i = 0
    # Four independent sums: one chain of adds was the bound (4 bytes a cycle), and a
    # 64 KiB run adds under 2^44 to each.
    while i + 32 <= n:
        memcpy(&word, p + i, 8)
        memcpy(&w1, p + i + 8, 8)
        memcpy(&w2, p + i + 16, 8)
        memcpy(&w3, p + i + 24, 8)
        total += <uint32_t>word + (word >> 32)
        t1 += <uint32_t>w1 + (w1 >> 32)
        t2 += <uint32_t>w2 + (w2 >> 32)
        t3 += <uint32_t>w3 + (w3 >> 32)
        i += 32
    total += t1 + t2 + t3
    while i + 8 <= n:
        memcpy(&word, p + i, 8)
        total += <uint32_t>word + (word >> 32)
        i += 8
    if i + 4 <= n:
        memcpy(&half, p + i, 4)
        total += half
        i += 4
    if i + 2 <= n:
        memcpy(&pair, p + i, 2)
        total += pair
        i += 2
    if i < n:
        pair = 0
        memcpy(&pair, p + i, 1)    # the byte at the word's first address: its high half
        total += pair
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    if (<uint8_t *>&probe)[0] == 1:  # little-endian: the words were read byte-swapped
        total = ((total & 0xFF) << 8) | (total >> 8)
    return acc + total


cdef inline uint16_t csum_fold(uint64_t acc) noexcept nogil:
    while acc >> 16:
        acc = (acc & 0xFFFF) + (acc >> 16)
    return <uint16_t>(~acc & 0xFFFF)



cdef void finish_partial_csum(uint8_t *pkt, Py_ssize_t n, const uint8_t *vnet) noexcept nogil
cdef int tcp_segment_at(const uint8_t *pkt, Py_ssize_t n, int v6, Py_ssize_t ip_len,
                        Py_ssize_t tcp_len, Py_ssize_t mss, Py_ssize_t index,
                        uint8_t *out, bint with_payload, bint csum_partial) noexcept nogil
cdef int tcp_layout(const uint8_t *pkt, Py_ssize_t n, int v6, Py_ssize_t *ip_len,
                    Py_ssize_t *tcp_len) noexcept nogil
