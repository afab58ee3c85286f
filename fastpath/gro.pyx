"""Receive coalescing (GRO in software), see gro.pxd: the functions the engine's tunnel
receive path uses, and `coalesce()`, which runs the same loop from Python for the
differential tests (never on the data path)."""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memcpy, memset
from posix.uio cimport iovec

from .offload cimport VNET_HDR_BYTES, csum_add, csum_fold, put_be16, tcp_layout


cdef inline uint32_t be32(const uint8_t *p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef int tcp_header(const uint8_t *p, int n, int *v6, int *ip_len,
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


cdef int udp_header(const uint8_t *p, int n, int *v6, int *ip_len) noexcept nogil:
    """Payload length of a UDP datagram we may coalesce, or -1."""
    cdef int version = p[0] >> 4
    if version == 4:
        if n < 28 or p[9] != 17 or (p[6] & 0x3F) or p[7] or (p[0] & 0x0F) != 5:
            return -1               # no fragments, no IPv4 options
        v6[0] = 0
        ip_len[0] = 20
        if (<int>p[2] << 8 | p[3]) != n:
            return -1
    elif version == 6:
        if n < 48 or p[6] != 17 or (<int>p[4] << 8 | p[5]) != n - 40:
            return -1
        v6[0] = 1
        ip_len[0] = 40
    else:
        return -1
    if (<int>p[ip_len[0] + 4] << 8 | p[ip_len[0] + 5]) != n - ip_len[0]:
        return -1                   # the UDP length must be the datagram's
    return n - ip_len[0] - 8


cdef int flow_run(Flow *f, uint8_t **packets, const int *lengths, int first,
                  int end, bint udp_ok) noexcept nogil:
    """The end of the run of packets[first:end] that merges into one super-packet (the
    engine's receive path and the tests both use this loop): first + 1 if packets[first]
    stands alone. A packet of length 0 (dropped by a stage) ends a run. UDP runs only if
    `udp_ok` (the TUN device takes USO writes)."""
    cdef int j = first + 1
    if not flow_start(f, packets[first], lengths[first], udp_ok):
        return j
    while j < end and j - first < GRO_MAX_SEGMENTS and lengths[j] > 0 and \
            flow_accepts(f, packets[j], lengths[j]):
        j += 1
    return j


cdef bint flow_start(Flow *f, const uint8_t *p, int n, bint udp_ok) noexcept nogil:
    cdef int payload = udp_header(p, n, &f.v6, &f.ip_len) if udp_ok else -1
    f.udp = payload > 0
    if f.udp:
        f.tcp_len = 8
        f.closed = False
    else:
        payload = tcp_header(p, n, &f.v6, &f.ip_len, &f.tcp_len)
        if payload <= 0:
            return False
        f.next_seq = be32(p + f.ip_len + 4) + <uint32_t>payload
        f.closed = bool(p[f.ip_len + 13] & TCP_FIN_PSH)
    f.head = p
    f.mss = payload
    f.last_payload = payload
    f.payload = payload
    f.count = 1
    return True


cdef bint flow_accepts(Flow *f, const uint8_t *q, int n) noexcept nogil:
    """Whether segment q extends the run (and if so, records it)."""
    cdef int v6, ip_len, tcp_len = 8
    if f.closed or f.last_payload != f.mss:
        return False
    cdef int payload = udp_header(q, n, &v6, &ip_len) if f.udp else \
        tcp_header(q, n, &v6, &ip_len, &tcp_len)
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
    if f.udp:
        if memcmp(ht, qt, 4):       # the same ports
            return False
        f.last_payload = payload
        f.payload += payload
        f.count += 1
        return True
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


cdef int flow_build(Flow *f, uint8_t *head, uint8_t **segments, const int *lengths,
                    iovec *iov) noexcept nogil:
    """The merged super-packet as f.count + 1 pieces for one writev: iov[0] the
    virtio_net_hdr and the fixed headers, written to `head` (GRO_HEAD_BYTES), then each
    segment's payload where it lies (no copy here: the kernel gathers them as it copies
    the write in). Returns the total size.

    The TCP checksum is left partial (pseudo-header sum, NEEDS_CSUM) as a sending stack
    leaves it: the receiving kernel trusts it for local delivery and completes it if the
    packet is forwarded and re-segmented.
    """
    cdef int hl = f.ip_len + f.tcp_len, i, total = hl + f.payload
    cdef uint8_t *pkt = head + 10
    memcpy(pkt, f.head, hl)
    iov[0].iov_base = head
    iov[0].iov_len = 10 + hl
    for i in range(f.count):
        iov[i + 1].iov_base = segments[i] + hl
        iov[i + 1].iov_len = lengths[i] - hl
    cdef uint8_t *tcp = pkt + f.ip_len
    if not f.udp:
        tcp[13] |= segments[f.count - 1][f.ip_len + 13] & TCP_FIN_PSH
    else:
        put_be16(tcp + 4, <uint16_t>(total - f.ip_len))   # UDP length: the whole
    if f.v6:
        put_be16(pkt + 4, <uint16_t>(total - 40))
    else:
        put_be16(pkt + 2, <uint16_t>total)
        pkt[10] = 0
        pkt[11] = 0
        put_be16(pkt + 10, csum_fold(csum_add(0, pkt, f.ip_len)))
    l4_csum_to_kernel(pkt, f.v6, f.ip_len, total - f.ip_len, f.udp, head)
    head[1] = VNET_GSO_UDP_L4 if f.udp else 4 if f.v6 else 1  # USO / GSO_TCPV6 / GSO_TCPV4
    head[2] = <uint8_t>hl
    head[3] = <uint8_t>(hl >> 8)
    head[4] = <uint8_t>f.mss
    head[5] = <uint8_t>(f.mss >> 8)
    return total + 10


cdef inline void l4_csum_to_kernel(uint8_t *pkt, bint v6, int ip_len, int l4_len, bint udp,
                                   uint8_t *vnet) noexcept nogil:
    """The L4 checksum left to the kernel, as a sending stack leaves it: the field holds
    the pseudo-header sum, `vnet` says NEEDS_CSUM from the L4 header on (its GSO fields
    are the caller's)."""
    cdef uint64_t acc = csum_add(0, pkt + 8, 32) if v6 else csum_add(0, pkt + 12, 8)
    acc += (17 if udp else 6) + l4_len
    put_be16(pkt + ip_len + (6 if udp else 16), <uint16_t>~csum_fold(acc))
    vnet[0] = 1                                         # VIRTIO_NET_HDR_F_NEEDS_CSUM
    vnet[6] = <uint8_t>ip_len                           # csum_start
    vnet[7] = <uint8_t>(ip_len >> 8)
    vnet[8] = 6 if udp else 16                          # csum_offset in the L4 header
    vnet[9] = 0


cdef bint tcp_csum_to_kernel(uint8_t *pkt, int n, uint8_t *vnet) noexcept nogil:
    """A TCP packet written alone, as flow_build writes a merged one: its checksum field
    set to the pseudo-header sum and `vnet` to NEEDS_CSUM, so the kernel neither checks
    nor needs what the sender put there (a peer that was told so leaves it partial).
    False, with nothing changed, for anything but an unfragmented TCP packet."""
    cdef Py_ssize_t ip_len, tcp_len
    cdef int version = pkt[0] >> 4 if n > 0 else 0
    if version == 4:   # unfragmented, and as long as its header says
        if n < 20 or (pkt[6] & 0x3F) or pkt[7] or (<int>pkt[2] << 8 | pkt[3]) != n:
            return False
    elif version == 6:
        if n < 40 or (<int>pkt[4] << 8 | pkt[5]) != n - 40:
            return False
    else:
        return False
    if tcp_layout(pkt, n, version == 6, &ip_len, &tcp_len) < 0:
        return False
    memset(vnet, 0, 10)
    l4_csum_to_kernel(pkt, version == 6, <int>ip_len, n - <int>ip_len, False, vnet)
    return True


def csum_to_kernel(const uint8_t[::1] packet):
    """The frame (virtio_net_hdr + packet) the engine writes for `packet` received alone
    on a wire with vnet headers: tcp_csum_to_kernel's, for the tests."""
    frame = bytearray(VNET_HDR_BYTES) + packet
    cdef uint8_t[::1] buf = frame
    tcp_csum_to_kernel(&buf[VNET_HDR_BYTES], packet.shape[0], &buf[0])
    return bytes(frame)


def coalesce(packets, bint udp=False):
    """The frames (virtio_net_hdr + packet) the engine writes for these packets, received
    in one batch for one wire (`udp`: its TUN device takes USO writes)."""
    cdef Flow flow
    cdef int count = len(packets), i = 0, j, k
    keep = [bytes(p) for p in packets]
    cdef uint8_t **data = <uint8_t **>malloc(max(count, 1) * sizeof(uint8_t *))
    cdef int *lengths = <int *>malloc(max(count, 1) * sizeof(int))
    if data == NULL or lengths == NULL:
        free(data)
        free(lengths)
        raise MemoryError()
    cdef uint8_t head[GRO_HEAD_BYTES]
    cdef iovec iov[GRO_MAX_SEGMENTS + 1]
    frames = []
    try:
        for i in range(count):
            data[i] = <uint8_t *><const char *>keep[i]
            lengths[i] = len(keep[i])
        i = 0
        while i < count:
            j = flow_run(&flow, data, lengths, i, count, udp)
            if j - i == 1:
                frames.append(bytes(VNET_HDR_BYTES) + keep[i])
            else:
                flow_build(&flow, head, &data[i], &lengths[i], iov)
                frame = b"".join((<uint8_t *>iov[k].iov_base)[:iov[k].iov_len]
                                 for k in range(flow.count + 1))
                frames.append(frame)
            i = j
    finally:
        free(data)
        free(lengths)
    return frames
