# Flows for stages that track connections (`from nsmd.plugins.flows cimport ...`): the
# 5-tuple of an IP packet, and an open-addressing table of flows with expiry times. All
# nogil, no allocation per packet (a table grows by doubling, up to its limit).
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

cdef enum:
    PROTO_ICMP = 1
    PROTO_TCP = 6
    PROTO_UDP = 17
    PROTO_ICMPV6 = 58
    ICMP_ECHO_REQUEST = 8
    ICMP_ECHO_REPLY = 0
    ICMPV6_ECHO_REQUEST = 128
    ICMPV6_ECHO_REPLY = 129

cdef struct FlowKey:
    uint8_t family              # 4 or 6
    uint8_t proto
    uint16_t sport              # TCP/UDP ports; ICMP echo: the identifier, both fields
    uint16_t dport
    uint8_t pad[2]
    uint8_t src[16]             # IPv4 in the first 4 bytes, the rest zero
    uint8_t dst[16]

cdef struct Headers:
    FlowKey key
    int l4                      # offset of the TCP/UDP/ICMP header; -1: none we can read
    uint8_t icmp_type           # ICMP/ICMPv6 only
    uint8_t icmp_code
    uint8_t tcp_flags           # TCP only

cdef struct FlowEntry:
    FlowKey key
    FlowKey other               # the owner's second key (nat: the translated tuple)
    double expires              # CLOCK_MONOTONIC; 0: never used
    uint8_t used

cdef struct FlowTable:
    FlowEntry *slots
    uint32_t mask               # capacity - 1 (a power of two)
    uint32_t filled             # slots used since the last rebuild, live or expired
    uint32_t max_slots
    uint64_t full               # flows refused because the table was full

# Parses the headers stages care about; -1 if `p` is not IPv4/IPv6.
cdef int parse(const uint8_t *p, uint32_t n, Headers *h) noexcept nogil
cdef bint echo_like(const Headers *h) noexcept nogil  # an ICMP echo request or reply
cdef void reverse(const FlowKey *k, FlowKey *out) noexcept nogil
cdef int table_init(FlowTable *t, uint32_t slots, uint32_t max_slots) noexcept nogil
cdef void table_free(FlowTable *t) noexcept nogil
# The live entry for `k`, or NULL.
cdef FlowEntry *table_find(FlowTable *t, const FlowKey *k, double now) noexcept nogil
# The live entry for `k`, made if missing (expires = 0 until the caller sets it); NULL if
# the table is full.
cdef FlowEntry *table_put(FlowTable *t, const FlowKey *k, double now) noexcept nogil
cdef uint32_t table_live(const FlowTable *t, double now) noexcept nogil

# RFC 1624 incremental checksum update of a 16-bit field over a change of `n` bytes
# (n even) from `old` to `new` (works for full checksums and for the folded pseudo-header
# sums of partial ones alike).
cdef uint16_t csum_replace(uint16_t check, const uint8_t *old, const uint8_t *new,
                           int n, bint partial) noexcept nogil
