"""The capture's stage: copies each packet it sees into a ring (one producer, the engine
thread; one consumer, flush() on the event loop), which flush() writes out as pcap
records. The engine never writes files or waits: when the ring is full, or the file has
reached its size, packets are only counted as not captured."""

from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

from nsmd.fastpath.stage cimport PKT_NOT_IP, Packet, Stage, StageBatch, stage_capsule


cdef extern from *:
    """
    static inline uint64_t nsmd_load_acquire(const uint64_t *p) {
        return __atomic_load_n(p, __ATOMIC_ACQUIRE);
    }
    static inline void nsmd_store_release(uint64_t *p, uint64_t v) {
        __atomic_store_n(p, v, __ATOMIC_RELEASE);
    }
    """
    uint64_t load_acquire "nsmd_load_acquire" (const uint64_t *p) noexcept nogil
    void store_release "nsmd_store_release" (uint64_t *p, uint64_t v) noexcept nogil

cdef enum:
    RECORD_HEADER = 16          # u32 record size (0xFFFFFFFF: padding to the ring's end),
                                # u32 original length, f64 timestamp (monotonic)
    PAD = 0xFFFFFFFF
    SNAPLEN = 65535

cdef struct Ring:
    uint8_t *buf
    uint64_t size               # a power of two
    uint64_t head               # written by the engine thread (release)
    uint64_t tail               # written by the consumer (release)
    uint32_t stopped            # the file is full: capture nothing more
    uint64_t captured
    uint64_t missed             # ring full


cdef inline uint64_t align8(uint64_t n) noexcept nogil:
    return (n + 7) & ~<uint64_t>7


cdef void run_capture(void *ctx, StageBatch *batch) noexcept nogil:
    cdef Ring *r = <Ring *>ctx
    cdef Packet *p
    cdef uint64_t head = r.head, tail, at, need, room
    cdef uint32_t caplen
    cdef int i
    if r.stopped:
        return
    tail = load_acquire(&r.tail)
    for i in range(batch.count):
        p = &batch.packets[i]
        if p.drop or p.flags & PKT_NOT_IP:  # IP packets only (LINKTYPE_RAW)
            continue
        caplen = p.len if p.len < SNAPLEN else SNAPLEN
        need = align8(RECORD_HEADER + caplen)
        at = head & (r.size - 1)
        room = r.size - at                          # contiguous room before the end
        if need > room:                             # pad to the end, start over at 0
            if head + room + need - tail > r.size:
                r.missed += 1
                continue
            if room >= 4:
                (<uint32_t *>(r.buf + at))[0] = PAD
            head += room
            at = 0
        if head + need - tail > r.size:
            r.missed += 1
            continue
        (<uint32_t *>(r.buf + at))[0] = <uint32_t>need
        (<uint32_t *>(r.buf + at))[1] = p.len
        (<double *>(r.buf + at + 8))[0] = batch.now
        memcpy(r.buf + at + RECORD_HEADER, p.data, caplen)
        head += need
        r.captured += 1
    store_release(&r.head, head)


cdef class CaptureStage:
    """Captures one vWire into `writer` (a callable taking (monotonic time, original
    length, bytes) and returning False once the file is full)."""

    cdef Stage stage
    cdef Ring ring
    cdef readonly object writer   # the PcapWriter (or any callable) it hands packets to

    def __cinit__(self, uint64_t ring_bytes, writer):
        if ring_bytes & (ring_bytes - 1) or ring_bytes < 4096:
            raise ValueError("ring_bytes must be a power of two of at least 4096")
        self.ring.buf = <uint8_t *>malloc(ring_bytes)
        if self.ring.buf == NULL:
            raise MemoryError()
        self.ring.size = ring_bytes
        self.writer = writer
        self.stage.run = run_capture
        self.stage.ctx = &self.ring

    def __dealloc__(self):
        free(self.ring.buf)

    def stage_capsule(self):
        return stage_capsule(&self.stage)

    def flush(self):
        """Writes what the ring holds (on the event loop; never called per packet)."""
        cdef uint64_t head = load_acquire(&self.ring.head)
        cdef uint64_t tail = self.ring.tail, at
        cdef uint32_t size, orig
        cdef double when
        while tail < head:
            at = tail & (self.ring.size - 1)
            size = (<uint32_t *>(self.ring.buf + at))[0]
            if size == PAD or self.ring.size - at < RECORD_HEADER:
                tail += self.ring.size - at
                continue
            orig = (<uint32_t *>(self.ring.buf + at))[1]
            when = (<double *>(self.ring.buf + at + 8))[0]
            data = (<char *>self.ring.buf)[at + RECORD_HEADER:at + RECORD_HEADER +
                                           min(orig, SNAPLEN)]
            tail += size
            if not self.writer(when, orig, data):
                self.ring.stopped = 1
                tail = head
                break
        store_release(&self.ring.tail, tail)

    def stats(self):
        return {"captured": self.ring.captured, "missed": self.ring.missed,
                "stopped": int(self.ring.stopped)}

    def close(self):
        self.flush()
        self.ring.stopped = 1
        self.writer.close()
