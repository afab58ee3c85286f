"""The marker's stage: DSCP on IPv4 packets from the client, header checksum updated."""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

from nsmd.fastpath.stage cimport (DIR_CLIENT_TO_ENDPOINT, PKT_NOT_IP, Packet, Stage,
                                  StageBatch, stage_capsule)


cdef struct Marker:
    uint8_t dscp
    uint64_t marked


cdef void run_marker(void *ctx, StageBatch *batch) noexcept nogil:
    cdef Marker *m = <Marker *>ctx
    cdef Packet *p
    cdef uint8_t old, new
    cdef uint32_t sum
    cdef int i
    if batch.direction != DIR_CLIENT_TO_ENDPOINT:
        return
    for i in range(batch.count):
        p = &batch.packets[i]
        if p.drop or p.flags & PKT_NOT_IP or p.data[0] >> 4 != 4:
            continue
        old = p.data[1]
        new = (m.dscp << 2) | (old & 3)
        if new == old:
            continue
        p.data[1] = new
        # RFC 1624: HC' = ~(~HC + ~m + m'), over the 16-bit word holding the TOS byte
        sum = <uint16_t>~((<uint16_t>p.data[10] << 8) | p.data[11])
        sum += <uint16_t>~((<uint16_t>(p.data[0]) << 8) | old)
        sum += (<uint16_t>(p.data[0]) << 8) | new
        sum = (sum & 0xFFFF) + (sum >> 16)
        sum = (sum & 0xFFFF) + (sum >> 16)
        p.data[10] = <uint8_t>((~sum >> 8) & 0xFF)
        p.data[11] = <uint8_t>(~sum & 0xFF)
        m.marked += 1


cdef class MarkerStage:
    cdef Stage stage
    cdef Marker marker

    def __cinit__(self, int dscp):
        self.marker.dscp = dscp
        self.stage.run = run_marker
        self.stage.ctx = &self.marker

    def stage_capsule(self):
        return stage_capsule(&self.stage)

    def stats(self):
        return {"marked": self.marker.marked}

    def flush(self):
        pass

    def close(self):
        pass
