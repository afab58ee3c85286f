"""TCP segmentation offload in software (see offload.pxd): what the engine's tunnel does
with a super-packet, and `segment()`, the same functions called from Python for the
differential tests (never on the data path)."""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy


cdef void finish_partial_csum(uint8_t *pkt, Py_ssize_t n, const uint8_t *vnet) noexcept nogil:
    """Completes a checksum the sender left to 'hardware' (VIRTIO_NET_HDR_F_NEEDS_CSUM):
    the field already holds the pseudo-header sum; fold in everything from csum_start."""
    cdef Py_ssize_t start = le16(vnet + 6), field = start + le16(vnet + 8)
    if vnet[0] & VNET_F_NEEDS_CSUM and field + 2 <= n:
        put_be16(pkt + field, csum_fold(csum_add(0, pkt + start, n - start)))


cdef int tcp_segment_at(const uint8_t *pkt, Py_ssize_t n, int v6, Py_ssize_t ip_len,
                               Py_ssize_t tcp_len, Py_ssize_t mss, Py_ssize_t index,
                               uint8_t *out, bint with_payload, bint csum_partial) noexcept nogil:
    """Writes the headers of segment `index` of the TCP super-packet `pkt` to `out` (IP
    header first), and its payload after them if `with_payload` (otherwise it stays at
    pkt + ip_len + tcp_len + index * mss for the caller to seal from there); returns the
    segment's length, or 0 past the last segment. Headers are copied and fixed: lengths,
    IPv4 id and checksum, sequence number, FIN/PSH only on the last segment, CWR only on
    the first, and the TCP checksum: full, or with `csum_partial` the pseudo-header sum
    only, as a sending stack leaves it for the NIC (a receiver that said it takes those
    finishes it, or has its kernel do so)."""
    cdef Py_ssize_t hl = ip_len + tcp_len
    cdef Py_ssize_t payload = n - hl
    cdef Py_ssize_t off = index * mss
    if off >= payload and not (payload == 0 and index == 0):
        return 0
    cdef Py_ssize_t seg = payload - off if payload - off < mss else mss
    cdef bint last = off + seg >= payload
    memcpy(out, pkt, hl)
    if with_payload:
        memcpy(out + hl, pkt + hl + off, seg)
    cdef uint8_t *tcp = out + ip_len
    cdef uint32_t seq = ((<uint32_t>pkt[ip_len + 4] << 24) | (<uint32_t>pkt[ip_len + 5] << 16)
                         | (<uint32_t>pkt[ip_len + 6] << 8) | pkt[ip_len + 7]) + <uint32_t>off
    tcp[4] = <uint8_t>(seq >> 24)
    tcp[5] = <uint8_t>(seq >> 16)
    tcp[6] = <uint8_t>(seq >> 8)
    tcp[7] = <uint8_t>seq
    if not last:
        tcp[13] &= ~(TCP_FIN | TCP_PSH)
    if index > 0:
        tcp[13] &= ~TCP_CWR
    cdef uint64_t acc
    if v6:
        put_be16(out + 4, <uint16_t>(tcp_len + seg))
        acc = csum_add(0, out + 8, 32)             # source and destination
    else:
        put_be16(out + 2, <uint16_t>(hl + seg))
        put_be16(out + 4, <uint16_t>(be16(pkt + 4) + index))
        out[10] = 0
        out[11] = 0
        put_be16(out + 10, csum_fold(csum_add(0, out, ip_len)))
        acc = csum_add(0, out + 12, 8)
    acc += 6 + tcp_len + seg                       # protocol and TCP length
    tcp[16] = 0
    tcp[17] = 0
    if csum_partial:
        put_be16(tcp + 16, <uint16_t>~csum_fold(acc))
    else:
        put_be16(tcp + 16, csum_fold(csum_add(csum_add(acc, tcp, tcp_len),
                                              pkt + hl + off, seg)))
    return <int>(hl + seg)


cdef int tcp_layout(const uint8_t *pkt, Py_ssize_t n, int v6, Py_ssize_t *ip_len,
                           Py_ssize_t *tcp_len) noexcept nogil:
    """Header lengths of a TCP super-packet; -1 if it is not one we can cut."""
    if v6:
        if n < 60 or pkt[6] != 6:                  # no IPv6 extension headers
            return -1
        ip_len[0] = 40
    else:
        if n < 40 or pkt[9] != 6:
            return -1
        ip_len[0] = (pkt[0] & 0x0F) * 4
    if ip_len[0] < 20 or ip_len[0] + 20 > n:
        return -1
    tcp_len[0] = (pkt[ip_len[0] + 12] >> 4) * 4
    if tcp_len[0] < 20 or ip_len[0] + tcp_len[0] > n:
        return -1
    return 0


def segment(const uint8_t[::1] frame, bint csum_partial=False):
    """The packets the engine sends for one TUN read `frame` (virtio_net_hdr + packet);
    `csum_partial`: a super-packet's segments with their TCP checksums left partial."""
    if frame.shape[0] < VNET_HDR_BYTES:
        raise ValueError("shorter than a virtio_net_hdr")
    cdef const uint8_t *vnet = &frame[0]
    cdef Py_ssize_t n = frame.shape[0] - VNET_HDR_BYTES
    packet = bytearray(frame[VNET_HDR_BYTES:])
    cdef uint8_t[::1] pkt = packet
    cdef int gso = vnet[1] & ~GSO_ECN
    cdef Py_ssize_t ip_len, tcp_len, mss = le16(vnet + 4), i = 0
    if gso == GSO_NONE:
        finish_partial_csum(&pkt[0], n, vnet)
        return [bytes(packet)]
    if gso not in (GSO_TCPV4, GSO_TCPV6) or mss == 0:
        raise ValueError(f"unsupported gso_type {gso} / gso_size {mss}")
    if tcp_layout(&pkt[0], n, gso == GSO_TCPV6, &ip_len, &tcp_len) < 0:
        raise ValueError("not a TCP packet we can segment")
    out = bytearray(ip_len + tcp_len + mss)
    cdef uint8_t[::1] buf = out
    segments = []
    while True:
        size = tcp_segment_at(&pkt[0], n, gso == GSO_TCPV6, ip_len, tcp_len, mss, i, &buf[0],
                              True, csum_partial)
        if size == 0:
            return segments
        segments.append(bytes(out[:size]))
        i += 1
