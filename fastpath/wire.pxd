# The engine's C-level state: constants, the wire table and the worker's buffers. A leaf:
# the engine (engine.pyx) and the pumps (local, tunnel_out, tunnel_in) all cimport it,
# and it cimports only declarations, so no module depends on another's implementation.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from posix.uio cimport iovec

from .includes.epoll cimport EPOLL_CTL_DEL, epoll_ctl
from .aead cimport Aead
from .includes.pthread cimport pthread_mutex_t
from .includes.sockets cimport mmsghdr, sockaddr_in
from .offload cimport GSO_ECN, GSO_NONE, VNET_F_NEEDS_CSUM, le16
from .classify cimport VERDICT_MALFORMED, VERDICT_PASS, classify_ip
from .stage cimport PKT_CSUM_PARTIAL, PKT_NOT_IP, Packet, Stage, StageBatch
from .tunnel cimport Tunnel

cdef enum:
    # Packets taken from one fd per wake-up before the next fd gets its turn; also the
    # recvmmsg/sendmmsg batch.
    BATCH_SIZE = 64
    MAX_EVENTS = 64
    # Largest read from a TUN device: a 64 KiB (GSO) packet behind a virtio_net_hdr.
    PACKET_BUF_BYTES = 65536 + 64
    # One tunnel datagram: header + payload (interface MTU <= 1500 - IP - UDP - 32) + tag.
    DATAGRAM_BUF_BYTES = 2048
    INITIAL_WIRES = 64
    # Receive: a message may carry many coalesced datagrams (UDP GRO), so buffers are big
    # and fewer; RX_PENDING bounds the datagrams of one receive round.
    RX_MSGS = 32
    RX_BUF_BYTES = 65536
    RX_PENDING = 2048
    # A local wire with stages reads this many packets (up to 64 KiB each) before running
    # them and writing the survivors: the batch stages see.
    STAGE_BATCH = 16
    TICK_MS = 250               # keepalive timer resolution
    ETH_HEADER_BYTES = 14       # an ETHERNET vWire's frames: dst, src, ethertype
    ETHERTYPE_IPV4 = 0x0800
    ETHERTYPE_IPV6 = 0x86DD

    KIND_LOCAL = 0              # fd[0] and fd[1] are TUN devices
    KIND_TUNNEL = 1             # fd[0] is a TUN device, the other side the UDP tunnel
    KIND_RELAY = 2              # no device: a tunnel towards the client (side 0) and one
                                # towards the endpoint (side 1), a hop of a composed chain
    KIND_FORWARD = 3            # fd[0] and fd[1] are UDP sockets: a NAT relay's two ends,
                                # sealed datagrams passed on unopened (forward.pyx)

# Per-wire drop reasons (indexes into DirStats.drops).
cdef enum:
    DROP_NOT_IP = 0             # version nibble is neither 4 nor 6 (== VERDICT_NOT_IP)
    DROP_MALFORMED = 1          # IP header does not fit or disagrees with the length
    DROP_TX_ERROR = 2           # the output (TUN fd or UDP socket) refused the packet
    DROP_NO_KEY = 3             # nothing to encrypt with (tunnel not keyed yet, or spent)
    DROP_BAD_TAG = 4            # did not authenticate under the keypair it names
    DROP_REPLAY = 5             # counter already seen or behind the replay window
    DROP_TOO_BIG = 6            # packet larger than the tunnel can carry
    DROP_FILTERED = 7           # a stage (network service function) dropped it
    DROP_REASONS = 8

# Datagrams that name no wire are counted engine-wide.
cdef enum:
    UDP_TRUNCATED = 0           # shorter than header + tag
    UDP_OVERSIZE = 1            # larger than any datagram we send (MSG_TRUNC)
    UDP_BAD_TYPE = 2            # unknown message type or non-zero reserved bytes
    UDP_UNKNOWN_INDEX = 3       # receiver index of no live keypair
    UDP_REASONS = 4

cdef struct DirStats:
    uint64_t rx_packets
    uint64_t rx_bytes
    uint64_t tx_packets
    uint64_t tx_bytes
    uint64_t read_errors
    uint64_t drops[8]           # DROP_REASONS

cdef struct StageList:
    # The stages of one direction of a wire, in order (owned by the engine; the contexts
    # they point to by the Python objects the engine keeps for the wire).
    int count
    int direction               # DIR_* passed to the stages
    Stage stages[8]             # MAX_STAGES

cdef struct Forward:
    # A NAT relay's two ends: each latches onto the source of what it receives (from its
    # allowed address only) and the other end sends there.
    sockaddr_in latched[2]      # sin_port 0: nothing received yet
    uint32_t allowed[2]         # the one source address an end takes (network order)
    uint64_t refused[2]         # datagrams from another address

cdef struct Wire:
    int in_use
    int kind
    int vnet_hdr                # bytes of virtio_net_hdr before each packet (local wires)
    int l2                      # ETHERNET payload: TAP devices, Ethernet frames
    uint32_t gen                # bumped on removal, so stale handles and epoll keys miss
    int fd[2]                   # fd[1] is -1 for tunnel wires
    int dead[2]                 # the side's fd failed on read and left the epoll set
    DirStats dirs[2]            # dirs[0]: packets read from fd[0]; dirs[1]: from the other side
    StageList *stages[2]        # stages for packets read from fd[0] / the other side; NULL: none
    Tunnel *tunnel              # KIND_TUNNEL, KIND_RELAY side 0 (owned; NULL for local wires)
    Tunnel *tunnel2             # KIND_RELAY side 1 (owned)
    Forward *forward            # KIND_FORWARD (owned)

cdef struct Batch:
    # Reused buffers for one recvmmsg/sendmmsg round (owned by the worker thread).
    uint8_t *bufs               # BATCH_SIZE * DATAGRAM_BUF_BYTES
    mmsghdr msgs[64]
    iovec iov[64]
    sockaddr_in addrs[64]

cdef struct RxBatch:
    uint8_t *bufs               # RX_MSGS * RX_BUF_BYTES
    mmsghdr msgs[32]
    iovec iov[32]
    sockaddr_in addrs[32]
    uint64_t cmsg[256]          # 8 words of control data per message (UDP_GRO size)
    Wire **pend_wires           # RX_PENDING decrypted datagrams waiting for their round
    uint8_t **pend_data
    int *pend_len
    uint8_t *pend_side          # the tunnel of a relay wire they came in on

cdef struct EngineState:
    pthread_mutex_t lock        # protects wires, capacity, free_slots, n_free, retired, udp_*
    Wire *wires
    uint32_t capacity
    uint32_t *free_slots
    uint32_t n_free
    DirStats retired            # sums of removed wires, so totals never go back
    uint64_t udp_drops[4]       # UDP_REASONS
    int udp_fd                  # the host's tunnel socket, -1 if none
    int epfd
    int stopfd                  # eventfd: written once to stop the worker
    uint8_t *buf                # the worker's TUN packet buffer (local wires)
    uint8_t *stage_bufs         # STAGE_BATCH * PACKET_BUF_BYTES, for local wires with stages
    Packet *packets             # the views stages get: RX_PENDING of them
    RxBatch *rx
    Batch *tx
    Wire *relay_wires[64]       # the wire and side of each relayed datagram in tx (BATCH_SIZE)
    uint8_t relay_sides[64]
    uint8_t *gso_buf            # sealed segments of one super-packet, back to back
    uint64_t gso_cmsg[4]        # control message: UDP_SEGMENT = datagram size
    int gso_off                 # the socket refused UDP GSO once: send datagrams singly
    uint64_t gso_sends          # sendmsg calls that carried several datagrams
    uint64_t gro_receives       # received messages that carried several datagrams
    int uso_off                 # a TUN device refused a UDP GSO (USO) write once: no more
    uint64_t uso_writes         # TUN writes that carried several UDP datagrams
    Aead aead                   # the worker's AEAD context
    double last_tick
    double now                  # CLOCK_MONOTONIC at the worker's current wake-up
    double reject_after_s       # a keypair's whole life (WireGuard's RejectAfterTime)


cdef inline void mark_dead(Wire *w, int side, DirStats *s, int epfd) noexcept nogil:
    # The device is gone (netns deleted, fd revoked): stop polling it, or the
    # level-triggered epoll would spin. Python sees it as `dead` in the stats.
    s.read_errors += 1
    w.dead[side] = 1
    epoll_ctl(epfd, EPOLL_CTL_DEL, w.fd[side], NULL)


cdef inline Tunnel *wire_tunnel(Wire *w, int side) noexcept nogil:
    """A tunnel wire's tunnel, or a relay wire's tunnel on `side` (1: towards the endpoint)."""
    return w.tunnel2 if side == 1 and w.kind == KIND_RELAY else w.tunnel


cdef inline int ethertype(const uint8_t *frame) noexcept nogil:
    return (<int>frame[12] << 8) | frame[13]


cdef inline int classify_frame(const uint8_t *p, Py_ssize_t n, int l2) noexcept nogil:
    """VERDICT_PASS for what a wire may carry: a well-formed IP packet, or on an ETHERNET
    wire a frame (one carrying IP must carry a well-formed packet)."""
    cdef int kind
    if not l2:
        return classify_ip(p, n)
    if n < ETH_HEADER_BYTES:
        return VERDICT_MALFORMED
    kind = ethertype(p)
    if kind == ETHERTYPE_IPV4 or kind == ETHERTYPE_IPV6:
        return classify_ip(p + ETH_HEADER_BYTES, n - ETH_HEADER_BYTES)
    return VERDICT_PASS


cdef inline void frame_packet(Packet *p, uint8_t *frame, Py_ssize_t n, int vnet_hdr,
                              int l2) noexcept nogil:
    """The stage view of one read: the IP packet after its virtio_net_hdr and Ethernet
    header (if any), how many segments a super-packet leaves as, whether its checksum is
    left partial; a frame without IP is flagged PKT_NOT_IP."""
    cdef Py_ssize_t payload, mss
    cdef int kind
    p.data = frame + vnet_hdr
    p.len = <uint32_t>(n - vnet_hdr)
    p.segments = 1
    p.flags = 0
    p.drop = 0
    if l2:
        kind = ethertype(p.data)
        if kind != ETHERTYPE_IPV4 and kind != ETHERTYPE_IPV6:
            p.flags = PKT_NOT_IP
            return
        p.data += ETH_HEADER_BYTES
        p.len -= ETH_HEADER_BYTES
    if not vnet_hdr:
        return
    if frame[0] & VNET_F_NEEDS_CSUM:
        p.flags = PKT_CSUM_PARTIAL
    mss = le16(frame + 4)
    payload = n - vnet_hdr - le16(frame + 2)   # hdr_len: (Ethernet +) IP + TCP headers
    if (frame[1] & ~GSO_ECN) != GSO_NONE and mss > 0 and payload > mss:
        p.segments = <uint16_t>((payload + mss - 1) // mss)


cdef inline Py_ssize_t frame_bytes(const Packet *p, const uint8_t *frame) noexcept nogil:
    """How long the read that `p` views is now (a stage may have shortened the packet)."""
    return (p.data - frame) + p.len


cdef inline int run_stages(StageList *stages, Packet *packets, int count, double now,
                           DirStats *s) noexcept nogil:
    """Runs a direction's stages over `count` packets; counts the drops (`filtered`) and
    returns how many were dropped."""
    cdef StageBatch batch
    cdef int i, dropped = 0
    batch.packets = packets
    batch.count = count
    batch.direction = stages.direction
    batch.now = now
    for i in range(stages.count):
        stages.stages[i].run(stages.stages[i].ctx, &batch)
    for i in range(count):
        if packets[i].drop:
            dropped += 1
    s.drops[DROP_FILTERED] += dropped
    return dropped
