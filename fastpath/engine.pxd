# The packet engine's C-level state; see engine.pyx for the pipeline.
from libc.stdint cimport uint8_t, uint32_t, uint64_t

from .includes.pthread cimport pthread_mutex_t, pthread_t

cdef enum:
    # Packets taken from one fd per wake-up before the next fd gets its turn.
    BATCH_SIZE = 128
    MAX_EVENTS = 64
    # Largest IP packet a TUN device can hand over (MTU <= 65535).
    PACKET_BUF_BYTES = 65536
    INITIAL_WIRES = 64

# Drop reasons, indexes into DirStats.drops.
cdef enum:
    DROP_NOT_IP = 0         # version nibble is neither 4 nor 6 (== VERDICT_NOT_IP)
    DROP_MALFORMED = 1      # IP header does not fit or disagrees with the length
    DROP_TX_ERROR = 2       # the peer fd refused the packet
    DROP_REASONS = 3

cdef struct DirStats:
    uint64_t rx_packets
    uint64_t rx_bytes
    uint64_t tx_packets
    uint64_t tx_bytes
    uint64_t read_errors
    uint64_t drops[3]       # indexed by DROP_*

cdef struct Wire:
    int in_use
    uint32_t gen            # bumped on removal, so stale handles and epoll keys miss
    int fd[2]               # side 0 and side 1; packets read from one go to the other
    int dead[2]             # the side's fd failed on read and left the epoll set
    DirStats dirs[2]        # dirs[s]: packets read from side s

cdef struct EngineState:
    pthread_mutex_t lock    # protects wires, capacity, free_slots, n_free, retired
    Wire *wires
    uint32_t capacity
    uint32_t *free_slots
    uint32_t n_free
    DirStats retired        # sums of removed wires, so totals never go back
    int epfd
    int stopfd              # eventfd: written once to stop the worker
    uint8_t *buf            # the worker's packet buffer (owned by the worker thread)


cdef class Engine:
    cdef EngineState *st
    cdef pthread_t thread
    cdef bint running

    cdef void _stop(self) noexcept
    cdef Wire *_lookup_locked(self, uint64_t handle) noexcept nogil
