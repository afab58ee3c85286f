"""The rate limiter's stage: a token bucket per direction for bits and one for packets; a
packet (a super-packet counts its segments) passes if both buckets hold enough, else it
is dropped. Buckets refill continuously from the batch's clock."""

from libc.stdint cimport uint64_t

from nsmd.fastpath.stage cimport PKT_NOT_IP, Packet, Stage, StageBatch, stage_capsule


cdef struct Bucket:
    double rate                 # tokens per second; 0: unlimited
    double depth                # the most tokens it holds (the burst)
    double tokens
    double last                 # when it was last filled (CLOCK_MONOTONIC)


cdef struct Limiter:
    Bucket bits[2]              # per direction
    Bucket packets[2]
    uint64_t passed[2]
    uint64_t dropped[2]


cdef inline void refill(Bucket *b, double now) noexcept nogil:
    if b.last == 0:
        b.tokens = b.depth
    elif now > b.last:
        b.tokens += (now - b.last) * b.rate
        if b.tokens > b.depth:
            b.tokens = b.depth
    b.last = now


cdef void run_limiter(void *ctx, StageBatch *batch) noexcept nogil:
    cdef Limiter *lim = <Limiter *>ctx
    cdef int d = batch.direction, i
    cdef Bucket *bits = &lim.bits[d]
    cdef Bucket *pkts = &lim.packets[d]
    cdef Packet *p
    cdef double need_bits, need_pkts
    refill(bits, batch.now)
    refill(pkts, batch.now)
    for i in range(batch.count):
        p = &batch.packets[i]
        if p.drop or p.flags & PKT_NOT_IP:  # ARP and such are never held back
            continue
        need_bits = p.len * 8.0
        need_pkts = p.segments
        if (bits.rate and bits.tokens < need_bits) or (pkts.rate and pkts.tokens < need_pkts):
            p.drop = 1
            lim.dropped[d] += p.segments
            continue
        if bits.rate:
            bits.tokens -= need_bits
        if pkts.rate:
            pkts.tokens -= need_pkts
        lim.passed[d] += p.segments


cdef class LimiterStage:
    cdef Stage stage
    cdef Limiter lim

    def __cinit__(self, double bits_per_s, double packets_per_s, double burst_bits,
                  double burst_packets):
        for d in range(2):
            self.lim.bits[d].rate = bits_per_s
            self.lim.bits[d].depth = burst_bits
            self.lim.packets[d].rate = packets_per_s
            self.lim.packets[d].depth = burst_packets
        self.stage.run = run_limiter
        self.stage.ctx = &self.lim

    def stage_capsule(self):
        return stage_capsule(&self.stage)

    def stats(self):
        return {"to_endpoint_passed": self.lim.passed[0], "to_endpoint_dropped":
                self.lim.dropped[0], "to_client_passed": self.lim.passed[1],
                "to_client_dropped": self.lim.dropped[1]}

    def flush(self):
        pass

    def close(self):
        pass
