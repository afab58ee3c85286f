# Packet classification shared by the engine stages: is this a well-formed IP packet?
# The readable twin is fastpath/reference.py; tests compare the two on random input.
from libc.stdint cimport uint8_t

cdef enum Verdict:
    VERDICT_PASS = -1
    # Drop reasons double as indexes into DirStats.drops (see engine.pxd).
    VERDICT_NOT_IP = 0
    VERDICT_MALFORMED = 1

cdef enum:
    IPV4_MIN_HEADER_BYTES = 20
    IPV6_HEADER_BYTES = 40


cdef inline int classify_ip(const uint8_t *p, Py_ssize_t n) noexcept nogil:
    """VERDICT_PASS for an IPv4/IPv6 packet whose header fits and agrees with its length.

    Header checksums are left to the receiving kernel, which verifies them anyway.
    """
    cdef Py_ssize_t header, total
    if n < 1:
        return VERDICT_MALFORMED
    version = p[0] >> 4
    if version == 4:
        if n < IPV4_MIN_HEADER_BYTES:
            return VERDICT_MALFORMED
        header = (p[0] & 0x0F) * 4
        total = (<Py_ssize_t>p[2] << 8) | p[3]
        if header < IPV4_MIN_HEADER_BYTES or total < header or total > n:
            return VERDICT_MALFORMED
        return VERDICT_PASS
    if version == 6:
        if n < IPV6_HEADER_BYTES:
            return VERDICT_MALFORMED
        total = IPV6_HEADER_BYTES + ((<Py_ssize_t>p[4] << 8) | p[5])
        if total > n:
            return VERDICT_MALFORMED
        return VERDICT_PASS
    return VERDICT_NOT_IP
