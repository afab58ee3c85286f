"""Python entry points to the software TCP segmentation, for tests (never on the data path)."""

from libc.stdint cimport uint8_t

from .offload cimport (GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_TCPV6, VNET_HDR_BYTES,
                       finish_partial_csum, le16, tcp_layout, tcp_segment_at)


def segment(const uint8_t[::1] frame):
    """The packets the engine sends for one TUN read `frame` (virtio_net_hdr + packet)."""
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
        size = tcp_segment_at(&pkt[0], n, gso == GSO_TCPV6, ip_len, tcp_len, mss, i, &buf[0])
        if size == 0:
            return segments
        segments.append(bytes(out[:size]))
        i += 1
