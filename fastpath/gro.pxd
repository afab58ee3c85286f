# Receive coalescing (GRO in software) for tunnel wires whose TUN device takes vnet
# headers: consecutive TCP segments of one flow from one receive batch are joined into one
# super-packet and written once, as a NIC's GRO would, so the receiving kernel runs its TCP
# input once per batch instead of once per segment. Merge rules follow Linux's
# tcp_gro_receive: same addresses, ports, ack, window, options; contiguous sequence
# numbers; every segment but the last exactly one MSS; no SYN/RST/URG; PSH or FIN end it.
# Datagrams of one UDP flow (same addresses, ports, TOS, TTL, DF; every one but the last
# of one payload size) are joined the same way into a UDP GSO (USO) super-packet when the
# caller allows it: the kernel takes it in one write and cuts it apart before the socket.
from libc.stdint cimport uint8_t, uint32_t
from posix.uio cimport iovec

cdef enum:
    TCP_SYN_RST_URG = 0x02 | 0x04 | 0x20
    TCP_FIN_PSH = 0x01 | 0x08
    VNET_GSO_UDP_L4 = 5
    GRO_MAX_BYTES = 65535 - 64
    GRO_MAX_SEGMENTS = 64
    GRO_HEAD_BYTES = 10 + 60 + 60    # virtio_net_hdr + the largest IP and TCP headers


cdef struct Flow:
    # The run being built: its first segment and what has been merged so far.
    const uint8_t *head
    int udp                     # a run of UDP datagrams (tcp_len is then the UDP header's 8)
    int v6
    int ip_len
    int tcp_len
    int mss                     # payload of the first segment
    int last_payload
    uint32_t next_seq
    int payload                 # total payload merged
    int count
    bint closed                 # a PSH/FIN segment ended the run



cdef bint flow_start(Flow *f, const uint8_t *p, int n, bint udp_ok) noexcept nogil
cdef bint flow_accepts(Flow *f, const uint8_t *q, int n) noexcept nogil
cdef int flow_run(Flow *f, uint8_t **packets, const int *lengths, int first,
                  int end, bint udp_ok) noexcept nogil
cdef int flow_build(Flow *f, uint8_t *head, uint8_t **segments, const int *lengths,
                    iovec *iov) noexcept nogil
cdef bint tcp_csum_to_kernel(uint8_t *pkt, int n, uint8_t *vnet) noexcept nogil
