"""The NAT's stage: source NAT (masquerade) of IPv4 flows the client side sends, with
connection tracking, port (or ICMP echo id) mapping and timeouts.

Client to endpoint: a TCP, UDP or ICMP echo flow from any source leaves from `address`,
on its own port if free, else the next free one; the mapping is remembered both ways.
Endpoint to client: a packet of a mapped flow gets its original destination back.
Checksums are updated incrementally (RFC 1624); with a partial checksum (the kernel
finishes it) only the address part of the pseudo-header changes it. Packets NAT cannot
track (other protocols, fragments, IPv6, a full table) pass unchanged and are counted.
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy

from nsmd.fastpath.stage cimport (DIR_CLIENT_TO_ENDPOINT, PKT_CSUM_PARTIAL, PKT_NOT_IP,
                                  Packet, Stage, StageBatch, stage_capsule)
from nsmd.plugins.flows cimport (PROTO_ICMP, PROTO_TCP, PROTO_UDP, FlowEntry, FlowKey,
                                 FlowTable, Headers, csum_replace, echo_like, parse, reverse,
                                 table_find, table_free, table_init, table_put)

cdef enum:
    SLOTS = 256
    MAX_SLOTS = 65536
    FIRST_PORT = 1024
    PORT_TRIES = 512
    TCP_FIN_RST = 0x01 | 0x04

cdef struct Nat:
    uint8_t addr[4]
    FlowTable out               # original tuple -> translated tuple
    FlowTable back              # reply tuple as it arrives -> original tuple
    double timeout_tcp
    double timeout_udp
    double timeout_icmp
    uint64_t translated
    uint64_t replies
    uint64_t untracked


cdef inline void put16(uint8_t *p, uint16_t v) noexcept nogil:
    p[0] = <uint8_t>(v >> 8)
    p[1] = <uint8_t>v


cdef inline uint16_t get16(const uint8_t *p) noexcept nogil:
    return (<uint16_t>p[0] << 8) | p[1]


cdef double timeout_of(const Nat *nat, const Headers *h) noexcept nogil:
    if h.key.proto == PROTO_TCP:
        return 10.0 if h.tcp_flags & TCP_FIN_RST else nat.timeout_tcp
    return nat.timeout_udp if h.key.proto == PROTO_UDP else nat.timeout_icmp


cdef void rewrite(Packet *p, const Headers *h, int addr_at, const uint8_t *addr,
                  uint16_t port, bint source) noexcept nogil:
    """Sets the source (or destination) address and port of the packet; fixes checksums."""
    cdef uint8_t *d = p.data
    cdef int l4 = h.l4, port_at, check_at = -1
    cdef bint partial = p.flags & PKT_CSUM_PARTIAL
    cdef uint8_t old_port[2]
    cdef uint8_t new_port[2]
    put16(d + 10, csum_replace(get16(d + 10), d + addr_at, addr, 4, False))
    if h.key.proto == PROTO_TCP:
        check_at = l4 + 16
    elif h.key.proto == PROTO_UDP and get16(d + l4 + 6) != 0:
        check_at = l4 + 6
    if check_at >= 0:   # the pseudo-header holds the address
        put16(d + check_at, csum_replace(get16(d + check_at), d + addr_at, addr, 4, partial))
    memcpy(d + addr_at, addr, 4)
    if h.key.proto == PROTO_ICMP:
        port_at, check_at, partial = l4 + 4, l4 + 2, False
    else:
        port_at = l4 if source else l4 + 2
    put16(new_port, port)
    memcpy(old_port, d + port_at, 2)
    if check_at >= 0 and not partial:   # a partial sum does not cover the ports yet
        put16(d + check_at, csum_replace(get16(d + check_at), old_port, new_port, 2, False))
    memcpy(d + port_at, new_port, 2)


cdef bint trackable(const Headers *h) noexcept nogil:
    if h.key.family != 4 or h.l4 < 0:
        return False
    return h.key.proto == PROTO_TCP or h.key.proto == PROTO_UDP or echo_like(h)


cdef FlowEntry *map_flow(Nat *nat, const Headers *h, double now,
                         double expires) noexcept nogil:
    """The `out` entry of this flow, made with a free port if new (both ways, living
    until `expires`); NULL if none."""
    cdef FlowEntry *e = table_find(&nat.out, &h.key, now)
    cdef FlowEntry *b
    cdef FlowKey t, reply
    cdef uint32_t port
    cdef int tries
    if e != NULL:
        return e
    t = h.key
    memcpy(t.src, nat.addr, 4)
    port = h.key.sport
    for tries in range(PORT_TRIES):
        t.sport = <uint16_t>port
        if h.key.proto == PROTO_ICMP:
            t.dport = t.sport
        reverse(&t, &reply)
        if table_find(&nat.back, &reply, now) == NULL:
            break
        port = port + 1 if port < 0xFFFF else FIRST_PORT
    else:
        return NULL
    e = table_put(&nat.out, &h.key, now)
    if e == NULL:
        return NULL
    b = table_put(&nat.back, &reply, now)
    if b == NULL:
        e.expires = 0.000001     # gone at once
        return NULL
    e.other = t
    b.other = h.key
    e.expires = expires
    b.expires = expires
    return e


cdef void run_nat(void *ctx, StageBatch *batch) noexcept nogil:
    cdef Nat *nat = <Nat *>ctx
    cdef Packet *p
    cdef Headers h
    cdef FlowEntry *e
    cdef FlowEntry *b
    cdef FlowKey reply
    cdef double expires
    cdef int i
    for i in range(batch.count):
        p = &batch.packets[i]
        if p.drop or p.flags & PKT_NOT_IP:
            continue
        if parse(p.data, p.len, &h) < 0 or not trackable(&h):
            if not p.drop:
                nat.untracked += 1
            continue
        expires = batch.now + timeout_of(nat, &h)
        if batch.direction == DIR_CLIENT_TO_ENDPOINT:
            e = map_flow(nat, &h, batch.now, expires)
            if e == NULL:
                nat.untracked += 1
                continue
            e.expires = expires
            reverse(&e.other, &reply)
            b = table_find(&nat.back, &reply, 0)
            if b != NULL:
                b.expires = expires
            if memcmp(&e.other, &h.key, sizeof(FlowKey)) != 0:
                rewrite(p, &h, 12, e.other.src, e.other.sport, True)
            nat.translated += 1
        else:
            b = table_find(&nat.back, &h.key, batch.now)
            if b == NULL:
                continue
            b.expires = expires
            e = table_find(&nat.out, &b.other, 0)
            if e != NULL:
                e.expires = expires
            if memcmp(b.other.src, h.key.dst, 4) != 0 or b.other.sport != h.key.dport:
                rewrite(p, &h, 16, b.other.src, b.other.sport, False)
            nat.replies += 1


cdef class NatStage:
    cdef Stage stage
    cdef Nat nat

    def __cinit__(self, bytes address, double tcp_timeout_s, double udp_timeout_s,
                  double icmp_timeout_s):
        if len(address) != 4:
            raise ValueError("an IPv4 address (4 bytes)")
        memcpy(self.nat.addr, <const char *>address, 4)
        if table_init(&self.nat.out, SLOTS, MAX_SLOTS) < 0 or \
                table_init(&self.nat.back, SLOTS, MAX_SLOTS) < 0:
            raise MemoryError()
        self.nat.timeout_tcp = tcp_timeout_s
        self.nat.timeout_udp = udp_timeout_s
        self.nat.timeout_icmp = icmp_timeout_s
        self.stage.run = run_nat
        self.stage.ctx = &self.nat

    def __dealloc__(self):
        table_free(&self.nat.out)
        table_free(&self.nat.back)

    def stage_capsule(self):
        return stage_capsule(&self.stage)

    def stats(self):
        return {"translated": self.nat.translated, "replies": self.nat.replies,
                "untracked": self.nat.untracked,
                "flows_refused": self.nat.out.full + self.nat.back.full}

    def flush(self):
        pass

    def close(self):
        pass
