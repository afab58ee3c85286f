# Encrypted UDP tunnel state of one vWire, and the wire format (docs/wire-format.md):
#
#   0      1            4              8                      16
#   | type | reserved=0 | receiver idx | counter (LE u64)     | ciphertext ... | tag (16) |
#
# type 1 = transport data; an empty payload is a keepalive. The 16-byte header is the
# AEAD's associated data; the nonce is the counter (aead.pyx).
from libc.stdint cimport uint8_t, uint32_t, uint64_t

from .includes.sockets cimport sockaddr_in
from .replay cimport ReplayState

cdef enum:
    MSG_TYPE_DATA = 1
    # A tunnel that heard its peer directly this recently does not roam back to the relay
    # on a datagram the relay passed on late (both paths carry it while it moves over).
    DIRECT_HOLD_MS = 2000
    HEADER_BYTES = 16
    OVERHEAD_BYTES = 32                  # header + tag
    # The receiver index names the wire's slot (high 24 bits) and one of its keypairs
    # (low 8 bits, a per-wire sequence), so lookup is one array access.
    INDEX_SEQ_BITS = 8
    # Keypair positions: a new keypair waits in NEXT until a packet proves the peer uses it.
    KP_PREVIOUS = 0
    KP_CURRENT = 1
    KP_NEXT = 2
    KP_EMPTY = 0
    KP_ACTIVE = 1                        # sends and receives
    KP_RECV_ONLY = 2                     # receives; promoted to CURRENT on first packet


cdef inline uint64_t reject_after_messages() noexcept nogil:
    """Refuse to send or accept past this counter (WireGuard's RejectAfterMessages); the
    control plane rekeys long before."""
    return <uint64_t>0xFFFFFFFFFFFFDFFE  # 2**64 - 2**13 - 2

cdef struct Keypair:
    int state
    uint32_t local_index        # what the peer puts in packets to us
    uint32_t remote_index       # what we put in packets to the peer
    int suite                   # the AEAD (aead.pxd SUITE_*)
    int send_csum_partial       # the peer takes TCP segments with partial checksums
    uint8_t send_key[32]
    uint8_t recv_key[32]
    uint64_t send_counter       # next counter to send
    ReplayState replay
    double created              # CLOCK_MONOTONIC seconds
    double reject_at            # created + the engine's reject_after_s: unusable from then

cdef struct Tunnel:
    sockaddr_in peer            # where datagrams go: set by the control plane, then moved to
                                # the source of each authenticated datagram (roaming)
    Keypair kp[3]               # KP_PREVIOUS, KP_CURRENT, KP_NEXT
    double last_rx              # monotonic time of the last authenticated packet
    double last_tx
    double keepalive_s          # send an empty packet after this long without sending; 0 = off
    int keepalive_due           # send one at the next tick (confirms a new keypair)
    uint64_t keepalives_tx
    uint64_t keepalives_rx
    uint64_t roams              # times an authenticated datagram moved `peer`
    uint32_t index_seq
    sockaddr_in probe           # a keepalive goes here too at the next tick (probe_due):
    int probe_due               # a direct path tried while the tunnel runs relayed
    uint64_t probes_tx
    sockaddr_in relay           # a NAT relay's port this tunnel also hears from (port 0: none)
    double last_direct_rx       # the last authenticated datagram from elsewhere than it


cdef inline void write_header(uint8_t *p, uint32_t receiver, uint64_t counter) noexcept nogil:
    cdef int i
    p[0] = MSG_TYPE_DATA
    p[1] = 0
    p[2] = 0
    p[3] = 0
    for i in range(4):
        p[4 + i] = <uint8_t>(receiver >> (8 * i))
    for i in range(8):
        p[8 + i] = <uint8_t>(counter >> (8 * i))


cdef inline uint32_t read_index(const uint8_t *p) noexcept nogil:
    return (<uint32_t>p[4]) | (<uint32_t>p[5] << 8) | (<uint32_t>p[6] << 16) | (<uint32_t>p[7] << 24)


cdef inline uint64_t read_counter(const uint8_t *p) noexcept nogil:
    cdef uint64_t value = 0
    cdef int i
    for i in range(8):
        value |= (<uint64_t>p[8 + i]) << (8 * i)
    return value


cdef inline Keypair *keypair_for(Tunnel *t, uint32_t index) noexcept nogil:
    cdef int i
    for i in range(3):
        if t.kp[i].state != KP_EMPTY and t.kp[i].local_index == index:
            return &t.kp[i]
    return NULL
