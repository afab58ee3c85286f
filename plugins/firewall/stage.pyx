"""The firewall's stage: ordered rules over what the client sends, stateful return traffic.

Client to endpoint: the first rule that matches decides (allow records the flow so its
replies pass), no match takes the default action. Endpoint to client: packets of a
recorded flow (the reverse 5-tuple) pass as replies; anything else takes the default
action. Counters per rule, for the default and for replies, read racily (64-bit, aligned)
by Python.
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy

from nsmd.fastpath.stage cimport (DIR_CLIENT_TO_ENDPOINT, PKT_NOT_IP, Packet, Stage,
                                  StageBatch, stage_capsule)
from nsmd.plugins.flows cimport (PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, FlowEntry,
                                 FlowKey, FlowTable, Headers, parse, reverse, table_find,
                                 table_free, table_init, table_put)

cdef enum:
    MAX_RANGES = 16
    PROTO_ANY_ICMP = 256        # `icmp` in a rule: ICMP or ICMPv6
    TCP_FIN_RST = 0x01 | 0x04
    FLOW_SLOTS = 256
    FLOW_MAX_SLOTS = 65536

cdef struct Rule:
    uint8_t allow
    uint16_t proto              # 0: any; PROTO_ANY_ICMP: ICMP or ICMPv6
    uint8_t family              # 0: any, 4, 6
    uint8_t src_bits            # prefix lengths; 0: any address
    uint8_t dst_bits
    uint8_t src[16]
    uint8_t dst[16]
    uint16_t sport_lo           # source port range; ICMP: type range
    uint16_t sport_hi
    int n_ranges                # destination port ranges; ICMP: code ranges; 0: any
    uint16_t lo[16]
    uint16_t hi[16]
    uint64_t packets
    uint64_t bytes

cdef struct Firewall:
    Rule *rules
    int n_rules
    uint8_t default_allow
    uint64_t default_packets
    uint64_t default_bytes
    uint64_t replies
    uint64_t flows_created
    double timeout_tcp
    double timeout_udp
    double timeout_other
    double timeout_closing      # a TCP flow after FIN or RST
    FlowTable flows


cdef inline bint prefix_match(const uint8_t *addr, const uint8_t *net, int bits) noexcept nogil:
    cdef int i = 0
    while bits >= 8:
        if addr[i] != net[i]:
            return False
        bits -= 8
        i += 1
    if bits == 0:
        return True
    cdef uint8_t mask = <uint8_t>(0xFF << (8 - bits))
    return (addr[i] & mask) == (net[i] & mask)


cdef bint rule_matches(const Rule *r, const Headers *h) noexcept nogil:
    cdef int proto = h.key.proto, i
    cdef uint16_t sport, dport
    cdef bint icmp = proto == PROTO_ICMP or proto == PROTO_ICMPV6
    if r.proto == PROTO_ANY_ICMP:
        if not icmp:
            return False
    elif r.proto and r.proto != proto:
        return False
    if r.family and r.family != h.key.family:
        return False
    if r.src_bits and not prefix_match(h.key.src, r.src, r.src_bits):
        return False
    if r.dst_bits and not prefix_match(h.key.dst, r.dst, r.dst_bits):
        return False
    if r.sport_lo == 0 and r.sport_hi == 0xFFFF and r.n_ranges == 0:
        return True
    if h.l4 < 0 or not (icmp or proto == PROTO_TCP or proto == PROTO_UDP):
        return False            # port ranges need a header we can read
    if icmp:
        sport, dport = h.icmp_type, h.icmp_code
    else:
        sport, dport = h.key.sport, h.key.dport
    if sport < r.sport_lo or sport > r.sport_hi:
        return False
    if r.n_ranges == 0:
        return True
    for i in range(r.n_ranges):
        if r.lo[i] <= dport <= r.hi[i]:
            return True
    return False


cdef double timeout_of(const Firewall *fw, const Headers *h) noexcept nogil:
    if h.key.proto == PROTO_TCP:
        return fw.timeout_closing if h.tcp_flags & TCP_FIN_RST else fw.timeout_tcp
    if h.key.proto == PROTO_UDP:
        return fw.timeout_udp
    return fw.timeout_other


cdef void run_firewall(void *ctx, StageBatch *batch) noexcept nogil:
    cdef Firewall *fw = <Firewall *>ctx
    cdef Packet *pkt
    cdef Headers h
    cdef FlowKey back
    cdef FlowEntry *e
    cdef Rule *r
    cdef int i, k
    cdef bint allow
    for i in range(batch.count):
        pkt = &batch.packets[i]
        if pkt.drop or pkt.flags & PKT_NOT_IP or parse(pkt.data, pkt.len, &h) < 0:
            continue
        if batch.direction != DIR_CLIENT_TO_ENDPOINT:
            reverse(&h.key, &back)
            e = table_find(&fw.flows, &back, batch.now)
            if e != NULL:
                e.expires = batch.now + timeout_of(fw, &h)
                fw.replies += pkt.segments
                continue
            fw.default_packets += pkt.segments
            fw.default_bytes += pkt.len
            if not fw.default_allow:
                pkt.drop = 1
            continue
        r = NULL
        for k in range(fw.n_rules):
            if rule_matches(&fw.rules[k], &h):
                r = &fw.rules[k]
                break
        if r != NULL:
            r.packets += pkt.segments
            r.bytes += pkt.len
            allow = r.allow
        else:
            fw.default_packets += pkt.segments
            fw.default_bytes += pkt.len
            allow = fw.default_allow
        if not allow:
            pkt.drop = 1
            continue
        e = table_put(&fw.flows, &h.key, batch.now)
        if e != NULL:
            if e.expires == 0:
                fw.flows_created += 1
            e.expires = batch.now + timeout_of(fw, &h)


cdef class FirewallStage:
    """One vWire's firewall: rules (dicts made by the firewall function), default action,
    flow timeouts in seconds."""

    cdef Stage stage
    cdef Firewall fw

    def __cinit__(self, list rules, bint default_allow, double tcp_timeout_s,
                  double udp_timeout_s, double other_timeout_s):
        self.fw.rules = <Rule *>calloc(max(len(rules), 1), sizeof(Rule))
        if self.fw.rules == NULL or table_init(&self.fw.flows, FLOW_SLOTS, FLOW_MAX_SLOTS) < 0:
            raise MemoryError()
        for i, spec in enumerate(rules):
            _fill_rule(&self.fw.rules[i], spec)
        self.fw.n_rules = len(rules)
        self.fw.default_allow = default_allow
        self.fw.timeout_tcp = tcp_timeout_s
        self.fw.timeout_udp = udp_timeout_s
        self.fw.timeout_other = other_timeout_s
        self.fw.timeout_closing = min(10.0, tcp_timeout_s)
        self.stage.run = run_firewall
        self.stage.ctx = &self.fw

    def __dealloc__(self):
        free(self.fw.rules)
        table_free(&self.fw.flows)

    def stage_capsule(self):
        return stage_capsule(&self.stage)

    def stats(self):
        out = {f"rule{i}_packets": self.fw.rules[i].packets for i in range(self.fw.n_rules)}
        out.update({f"rule{i}_bytes": self.fw.rules[i].bytes for i in range(self.fw.n_rules)})
        out.update(default_packets=self.fw.default_packets, default_bytes=self.fw.default_bytes,
                   replies=self.fw.replies, flows_created=self.fw.flows_created,
                   flows_refused=self.fw.flows.full)
        return out

    def flush(self):
        pass

    def close(self):
        pass


cdef void _fill_rule(Rule *r, dict spec) except *:
    r.allow = spec["allow"]
    r.proto = spec["proto"]
    r.family = spec["family"]
    cdef bytes src = spec["src"], dst = spec["dst"]
    for j in range(len(src)):
        r.src[j] = src[j]
    for j in range(len(dst)):
        r.dst[j] = dst[j]
    r.src_bits = spec["src_bits"]
    r.dst_bits = spec["dst_bits"]
    r.sport_lo, r.sport_hi = spec["sports"]
    ranges = spec["ranges"]
    if len(ranges) > MAX_RANGES:
        raise ValueError(f"at most {MAX_RANGES} port ranges per rule")
    r.n_ranges = len(ranges)
    for j, (lo, hi) in enumerate(ranges):
        r.lo[j] = lo
        r.hi[j] = hi
