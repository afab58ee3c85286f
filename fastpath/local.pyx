"""Local wires: packets from one TUN device to the other, on the engine's worker thread.

    TUN fd --read(2) x BATCH--> classify --> [stages] --write(2)--> the other TUN fd

With vnet headers on both devices, 64 KiB TCP super-packets pass whole and the header
travels with its packet: the receiving kernel finishes checksums and segments only if and
where it has to. A direction without stages writes each packet as soon as it is read (one
buffer); with stages, up to STAGE_BATCH packets are read, run through the stages together
and the survivors written, so a wire pays for batching only when it has functions.
"""

from libc.errno cimport EAGAIN, EINTR, errno
from libc.stdint cimport uint8_t
from posix.unistd cimport read, write

from .classify cimport VERDICT_MALFORMED, VERDICT_PASS
from .stage cimport Packet
from .wire cimport (BATCH_SIZE, DROP_TX_ERROR, PACKET_BUF_BYTES, STAGE_BATCH, DirStats,
                    EngineState, Wire, classify_frame, frame_bytes, frame_packet, mark_dead,
                    run_stages)


cdef void pump_local(EngineState *st, Wire *w, int side) noexcept nogil:
    """Moves up to BATCH_SIZE packets from w.fd[side] to the other TUN; lock held."""
    if w.stages[side] != NULL:
        pump_staged(st, w, side)
        return
    cdef DirStats *s = &w.dirs[side]
    cdef int out_fd = w.fd[1 - side]
    cdef int hdr = w.vnet_hdr
    cdef Py_ssize_t n
    cdef int verdict
    cdef uint8_t *buf = st.buf
    for _ in range(BATCH_SIZE):
        n = read(w.fd[side], buf, PACKET_BUF_BYTES)
        if n <= 0:
            if n < 0 and errno != EAGAIN and errno != EINTR:
                mark_dead(w, side, s, st.epfd)
            return
        s.rx_packets += 1
        s.rx_bytes += n - hdr
        verdict = classify_frame(buf + hdr, n - hdr, w.l2) if n >= hdr else VERDICT_MALFORMED
        if verdict != VERDICT_PASS:
            s.drops[verdict] += 1
            continue
        if write(out_fd, buf, n) != n:
            s.drops[DROP_TX_ERROR] += 1
            continue
        s.tx_packets += 1
        s.tx_bytes += n - hdr


cdef void pump_staged(EngineState *st, Wire *w, int side) noexcept nogil:
    """The same, in batches of STAGE_BATCH packets run through the direction's stages."""
    cdef DirStats *s = &w.dirs[side]
    cdef int out_fd = w.fd[1 - side]
    cdef int hdr = w.vnet_hdr
    cdef Packet *pkts = st.packets
    cdef uint8_t *frame
    cdef Py_ssize_t n = 1, size
    cdef int count, i, verdict
    for _round in range(BATCH_SIZE // STAGE_BATCH):
        count = 0
        while count < STAGE_BATCH:
            frame = st.stage_bufs + count * PACKET_BUF_BYTES
            n = read(w.fd[side], frame, PACKET_BUF_BYTES)
            if n <= 0:
                if n < 0 and errno != EAGAIN and errno != EINTR:
                    mark_dead(w, side, s, st.epfd)
                break
            s.rx_packets += 1
            s.rx_bytes += n - hdr
            verdict = classify_frame(frame + hdr, n - hdr, w.l2) if n >= hdr \
                else VERDICT_MALFORMED
            if verdict != VERDICT_PASS:
                s.drops[verdict] += 1
                continue
            frame_packet(&pkts[count], frame, n, hdr, w.l2)
            count += 1
        if count:
            run_stages(w.stages[side], pkts, count, st.now, s)
        for i in range(count):
            if pkts[i].drop:
                continue
            frame = st.stage_bufs + i * PACKET_BUF_BYTES
            size = frame_bytes(&pkts[i], frame)
            if write(out_fd, frame, size) != size:
                s.drops[DROP_TX_ERROR] += 1
                continue
            s.tx_packets += 1
            s.tx_bytes += size - hdr
        if n <= 0:
            return
