# Receive coalescing (GRO in software) for tunnel wires whose TUN device takes vnet
# headers: consecutive TCP segments of one flow from one receive batch are joined into one
# super-packet and written once, as a NIC's GRO would, so the receiving kernel runs its TCP
# input once per batch instead of once per segment. Merge rules follow Linux's
# tcp_gro_receive: same addresses, ports, ack, window, options; contiguous sequence
# numbers; every segment but the last exactly one MSS; no SYN/RST/URG; PSH or FIN end it.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy

from .offload cimport csum_add, csum_fold, put_be16, be16

cdef enum:
    TCP_SYN_RST_URG = 0x02 | 0x04 | 0x20
    TCP_FIN_PSH = 0x01 | 0x08
    GRO_MAX_BYTES = 65535 - 64


cdef struct Flow:
    # The run being built: its first segment and what has been merged so far.
    const uint8_t *head
    int v6
    int ip_len
    int tcp_len
    int mss                     # payload of the first segment
    int last_payload
    uint32_t next_seq
    int payload                 # total payload merged
    int count
    bint closed                 # a PSH/FIN segment ended the run


cdef inline uint32_t be32(const uint8_t *p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline int tcp_header(const uint8_t *p, int n, int *v6, int *ip_len,
                           int *tcp_len) noexcept nogil:
    """Payload length of a TCP segment we may coalesce, or -1."""
    cdef int version = p[0] >> 4
    if version == 4:
        if n < 40 or p[9] != 6 or (p[6] & 0x3F) or p[7]:   # no fragments
            return -1
        v6[0] = 0
        ip_len[0] = (p[0] & 0x0F) * 4
    elif version == 6:
        if n < 60 or p[6] != 6:
            return -1
        v6[0] = 1
        ip_len[0] = 40
    else:
        return -1
    if ip_len[0] + 20 > n:
        return -1
    tcp_len[0] = (p[ip_len[0] + 12] >> 4) * 4
    if tcp_len[0] < 20 or ip_len[0] + tcp_len[0] >= n:
        return -1
    if p[ip_len[0] + 13] & TCP_SYN_RST_URG:
        return -1
    return n - ip_len[0] - tcp_len[0]


cdef inline bint flow_start(Flow *f, const uint8_t *p, int n) noexcept nogil:
    cdef int payload = tcp_header(p, n, &f.v6, &f.ip_len, &f.tcp_len)
    if payload <= 0:
        return False
    f.head = p
    f.mss = payload
    f.last_payload = payload
    f.payload = payload
    f.next_seq = be32(p + f.ip_len + 4) + <uint32_t>payload
    f.count = 1
    f.closed = bool(p[f.ip_len + 13] & TCP_FIN_PSH)
    return True


cdef inline bint flow_accepts(Flow *f, const uint8_t *q, int n) noexcept nogil:
    """Whether segment q extends the run (and if so, records it)."""
    cdef int v6, ip_len, tcp_len
    if f.closed or f.last_payload != f.mss:
        return False
    cdef int payload = tcp_header(q, n, &v6, &ip_len, &tcp_len)
    if payload <= 0 or payload > f.mss or v6 != f.v6 or ip_len != f.ip_len \
            or tcp_len != f.tcp_len or f.ip_len + f.tcp_len + f.payload + payload > GRO_MAX_BYTES:
        return False
    cdef const uint8_t *h = f.head
    if v6:
        if memcmp(h, q, 4) or h[7] != q[7] or memcmp(h + 8, q + 8, 32):
            return False
    elif ip_len != 20 or h[1] != q[1] or h[8] != q[8] or (h[6] & 0x40) != (q[6] & 0x40) \
            or memcmp(h + 12, q + 12, 8):      # no IPv4 options; same TOS, TTL, DF, addresses
        return False
    cdef const uint8_t *ht = h + ip_len
    cdef const uint8_t *qt = q + ip_len
    if memcmp(ht, qt, 4) or memcmp(ht + 8, qt + 8, 5) or memcmp(ht + 14, qt + 14, 2) or \
            (ht[13] & ~TCP_FIN_PSH & 0xFF) != (qt[13] & ~TCP_FIN_PSH & 0xFF) or \
            memcmp(ht + 20, qt + 20, tcp_len - 20) or be32(qt + 4) != f.next_seq:
        return False
    f.last_payload = payload
    f.payload += payload
    f.next_seq += <uint32_t>payload
    f.count += 1
    f.closed = bool(qt[13] & TCP_FIN_PSH)
    return True


cdef inline int flow_build(Flow *f, uint8_t *out, const uint8_t **segments,
                           const int *lengths) noexcept nogil:
    """Writes virtio_net_hdr + the merged super-packet to `out`; returns its size.

    The TCP checksum is left partial (pseudo-header sum, NEEDS_CSUM) as a sending stack
    leaves it: the receiving kernel trusts it for local delivery and completes it if the
    packet is forwarded and re-segmented.
    """
    cdef int hl = f.ip_len + f.tcp_len, pos, i, total
    cdef uint8_t *pkt = out + 10
    memcpy(pkt, f.head, hl)
    pos = hl
    for i in range(f.count):
        memcpy(pkt + pos, segments[i] + hl, lengths[i] - hl)
        pos += lengths[i] - hl
    total = pos
    cdef uint8_t *tcp = pkt + f.ip_len
    tcp[13] |= segments[f.count - 1][f.ip_len + 13] & TCP_FIN_PSH
    cdef uint64_t acc
    if f.v6:
        put_be16(pkt + 4, <uint16_t>(total - 40))
        acc = csum_add(0, pkt + 8, 32)
    else:
        put_be16(pkt + 2, <uint16_t>total)
        pkt[10] = 0
        pkt[11] = 0
        put_be16(pkt + 10, csum_fold(csum_add(0, pkt, f.ip_len)))
        acc = csum_add(0, pkt + 12, 8)
    acc += 6 + total - f.ip_len
    put_be16(tcp + 16, <uint16_t>~csum_fold(acc))      # the folded pseudo-header sum
    out[0] = 1                                         # VIRTIO_NET_HDR_F_NEEDS_CSUM
    out[1] = 4 if f.v6 else 1                          # GSO_TCPV6 / GSO_TCPV4
    out[2] = <uint8_t>hl
    out[3] = <uint8_t>(hl >> 8)
    out[4] = <uint8_t>f.mss
    out[5] = <uint8_t>(f.mss >> 8)
    out[6] = <uint8_t>f.ip_len
    out[7] = <uint8_t>(f.ip_len >> 8)
    out[8] = 16
    out[9] = 0
    return total + 10
