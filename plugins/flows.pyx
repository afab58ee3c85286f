"""Flows for stages that track connections: see flows.pxd. Tests drive these through the
firewall and nat stages, and `_parse_for_tests()` below."""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcmp, memcpy, memset


cdef inline uint16_t be16(const uint8_t *p) noexcept nogil:
    return (<uint16_t>p[0] << 8) | p[1]


cdef int parse(const uint8_t *p, uint32_t n, Headers *h) noexcept nogil:
    cdef uint32_t ihl, frag
    cdef int l4 = -1
    memset(h, 0, sizeof(Headers))
    h.l4 = -1
    if n < 1:
        return -1
    if p[0] >> 4 == 4:
        if n < 20:
            return -1
        ihl = (p[0] & 0x0F) * 4
        h.key.family = 4
        h.key.proto = p[9]
        memcpy(h.key.src, p + 12, 4)
        memcpy(h.key.dst, p + 16, 4)
        frag = ((<uint32_t>p[6] & 0x1F) << 8) | p[7]
        if frag == 0 and ihl >= 20:     # a later fragment carries no L4 header
            l4 = <int>ihl
    elif p[0] >> 4 == 6:
        if n < 40:
            return -1
        h.key.family = 6
        h.key.proto = p[6]              # extension headers: no L4 view (rules by address)
        memcpy(h.key.src, p + 8, 16)
        memcpy(h.key.dst, p + 24, 16)
        l4 = 40
    else:
        return -1
    if l4 < 0:
        return 0
    if h.key.proto == PROTO_TCP or h.key.proto == PROTO_UDP:
        if <uint32_t>l4 + (20 if h.key.proto == PROTO_TCP else 8) > n:
            return 0
        h.key.sport = be16(p + l4)
        h.key.dport = be16(p + l4 + 2)
        if h.key.proto == PROTO_TCP:
            h.tcp_flags = p[l4 + 13]
        h.l4 = l4
    elif h.key.proto == PROTO_ICMP or h.key.proto == PROTO_ICMPV6:
        if <uint32_t>l4 + 8 > n:
            return 0
        h.icmp_type = p[l4]
        h.icmp_code = p[l4 + 1]
        h.l4 = l4
        if echo_like(h):                # echo id: the same in both directions
            h.key.sport = be16(p + l4 + 4)
            h.key.dport = h.key.sport
    return 0


cdef bint echo_like(const Headers *h) noexcept nogil:
    if h.key.proto == PROTO_ICMP:
        return h.icmp_type == ICMP_ECHO_REQUEST or h.icmp_type == ICMP_ECHO_REPLY
    if h.key.proto == PROTO_ICMPV6:
        return h.icmp_type == ICMPV6_ECHO_REQUEST or h.icmp_type == ICMPV6_ECHO_REPLY
    return False


cdef void reverse(const FlowKey *k, FlowKey *out) noexcept nogil:
    out[0] = k[0]
    memcpy(out.src, k.dst, 16)
    memcpy(out.dst, k.src, 16)
    out.sport = k.dport
    out.dport = k.sport


cdef inline uint64_t key_hash(const FlowKey *k) noexcept nogil:
    # FNV-1a over the key's bytes: cheap, and a vWire's flows are few and not adversarial
    # across tables (each vWire has its own).
    cdef const uint8_t *b = <const uint8_t *>k
    cdef uint64_t h = 14695981039346656037ULL
    cdef size_t i
    for i in range(sizeof(FlowKey)):
        h = (h ^ b[i]) * 1099511628211ULL
    return h


cdef int table_init(FlowTable *t, uint32_t slots, uint32_t max_slots) noexcept nogil:
    memset(t, 0, sizeof(FlowTable))
    t.slots = <FlowEntry *>calloc(slots, sizeof(FlowEntry))
    if t.slots == NULL:
        return -1
    t.mask = slots - 1
    t.max_slots = max_slots
    return 0


cdef void table_free(FlowTable *t) noexcept nogil:
    free(t.slots)
    t.slots = NULL


cdef FlowEntry *table_find(FlowTable *t, const FlowKey *k, double now) noexcept nogil:
    cdef uint32_t i = <uint32_t>key_hash(k) & t.mask
    cdef uint32_t probes
    cdef FlowEntry *e
    for probes in range(t.mask + 1):
        e = &t.slots[i]
        if not e.used:
            return NULL
        # expired entries stay in place as tombstones: a probe walks past them
        if e.expires > now and memcmp(&e.key, k, sizeof(FlowKey)) == 0:
            return e
        i = (i + 1) & t.mask
    return NULL


cdef int rebuild(FlowTable *t, double now) noexcept nogil:
    """Rehashes the live entries into a table twice the size if they fill half of it
    (within max_slots), else into a fresh one of the same size (dropping tombstones)."""
    cdef uint32_t live = table_live(t, now), size = t.mask + 1, i, j
    cdef FlowEntry *old = t.slots
    if live * 2 > size and size * 2 <= t.max_slots:
        size *= 2
    if live * 10 > size * 7:
        return -1                       # still too full: refuse new flows
    cdef FlowEntry *fresh = <FlowEntry *>calloc(size, sizeof(FlowEntry))
    if fresh == NULL:
        return -1
    cdef uint32_t old_size = t.mask + 1
    t.slots = fresh
    t.mask = size - 1
    t.filled = 0
    for i in range(old_size):
        if old[i].used and old[i].expires > now:
            j = <uint32_t>key_hash(&old[i].key) & t.mask
            while t.slots[j].used:
                j = (j + 1) & t.mask
            t.slots[j] = old[i]
            t.filled += 1
    free(old)
    return 0


cdef FlowEntry *table_put(FlowTable *t, const FlowKey *k, double now) noexcept nogil:
    cdef FlowEntry *e = table_find(t, k, now)
    if e != NULL:
        return e
    if (t.filled + 1) * 10 > (t.mask + 1) * 7 and rebuild(t, now) < 0:
        t.full += 1
        return NULL
    cdef uint32_t i = <uint32_t>key_hash(k) & t.mask
    while t.slots[i].used and t.slots[i].expires > now:
        i = (i + 1) & t.mask
    e = &t.slots[i]
    if not e.used:
        t.filled += 1
    memset(e, 0, sizeof(FlowEntry))
    e.key = k[0]
    e.used = 1
    return e


cdef uint32_t table_live(const FlowTable *t, double now) noexcept nogil:
    cdef uint32_t i, live = 0
    for i in range(t.mask + 1):
        if t.slots[i].used and t.slots[i].expires > now:
            live += 1
    return live


cdef uint16_t csum_replace(uint16_t check, const uint8_t *old, const uint8_t *new,
                           int n, bint partial) noexcept nogil:
    # RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'); a partial checksum field holds ~HC already.
    cdef uint64_t acc = (<uint16_t>~check if not partial else check)
    cdef int i
    for i in range(0, n, 2):
        acc += <uint16_t>~be16(old + i)
        acc += be16(new + i)
    while acc >> 16:
        acc = (acc & 0xFFFF) + (acc >> 16)
    return <uint16_t>acc if partial else <uint16_t>~acc


def _parse_for_tests(bytes packet):
    """(family, proto, src, dst, sport, dport, l4) as parse() sees `packet`."""
    cdef Headers h
    if parse(<const uint8_t *>packet, len(packet), &h) < 0:
        return None
    width = 4 if h.key.family == 4 else 16
    return (h.key.family, h.key.proto, bytes(h.key.src[:width]), bytes(h.key.dst[:width]),
            h.key.sport, h.key.dport, h.l4)
