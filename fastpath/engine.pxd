# The packet engine's C-level state; see engine.pyx for the pipeline.
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from posix.uio cimport iovec

from .includes.epoll cimport EPOLL_CTL_DEL, epoll_ctl
from .includes.openssl cimport EVP_CIPHER_CTX
from .includes.pthread cimport pthread_mutex_t, pthread_t
from .includes.sockets cimport mmsghdr, sockaddr_in
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
    TICK_MS = 250               # keepalive timer resolution

    KIND_LOCAL = 0              # fd[0] and fd[1] are TUN devices
    KIND_TUNNEL = 1             # fd[0] is a TUN device, the other side the UDP tunnel

# Per-wire drop reasons (indexes into DirStats.drops).
cdef enum:
    DROP_NOT_IP = 0             # version nibble is neither 4 nor 6 (== VERDICT_NOT_IP)
    DROP_MALFORMED = 1          # IP header does not fit or disagrees with the length
    DROP_TX_ERROR = 2           # the output (TUN fd or UDP socket) refused the packet
    DROP_NO_KEY = 3             # nothing to encrypt with (tunnel not keyed yet, or spent)
    DROP_BAD_TAG = 4            # did not authenticate under the keypair it names
    DROP_REPLAY = 5             # counter already seen or behind the replay window
    DROP_TOO_BIG = 6            # packet larger than the tunnel can carry
    DROP_REASONS = 7

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
    uint64_t drops[7]           # DROP_REASONS

cdef struct Wire:
    int in_use
    int kind
    int vnet_hdr                # bytes of virtio_net_hdr before each packet (local wires)
    uint32_t gen                # bumped on removal, so stale handles and epoll keys miss
    int fd[2]                   # fd[1] is -1 for tunnel wires
    int dead[2]                 # the side's fd failed on read and left the epoll set
    DirStats dirs[2]            # dirs[0]: packets read from fd[0]; dirs[1]: from the other side
    Tunnel *tunnel              # KIND_TUNNEL only (owned; NULL for local wires)

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
    RxBatch *rx
    Batch *tx
    uint8_t *gso_buf            # sealed segments of one super-packet, back to back
    uint64_t gso_cmsg[4]        # control message: UDP_SEGMENT = datagram size
    int gso_off                 # the socket refused UDP GSO once: send datagrams singly
    uint64_t gso_sends          # sendmsg calls that carried several datagrams
    uint64_t gro_receives       # received messages that carried several datagrams
    EVP_CIPHER_CTX *cipher      # the worker's AEAD context
    double last_tick
    double now                  # CLOCK_MONOTONIC at the worker's current wake-up
    double reject_after_s       # a keypair's whole life (WireGuard's RejectAfterTime)


cdef inline void mark_dead(Wire *w, int side, DirStats *s, int epfd) noexcept nogil:
    # The device is gone (netns deleted, fd revoked): stop polling it, or the
    # level-triggered epoll would spin. Python sees it as `dead` in the stats.
    s.read_errors += 1
    w.dead[side] = 1
    epoll_ctl(epfd, EPOLL_CTL_DEL, w.fd[side], NULL)


cdef class Engine:
    cdef EngineState *st
    cdef pthread_t thread
    cdef bint running

    cdef void _stop(self) noexcept
    cdef Wire *_lookup_locked(self, uint64_t handle) noexcept nogil
    cdef object _add(self, int kind, int fd_a, int fd_b, object peer, double keepalive_s,
                     int vnet_hdr)
    cdef dict _describe_locked(self, Wire *w)
