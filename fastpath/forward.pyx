"""A NAT relay's wire: two UDP sockets of the relay daemon, one per vWire end, passing
sealed tunnel datagrams between them unopened (the relay holds no keys).

    end A's socket --recvmmsg--> source == its allowed address? latch it --> sendmmsg on
    end B's socket to B's latched address (and back the other way)

An end latches onto the source of its latest datagram, so a NAT that remaps an end is
followed; datagrams from any other address are refused (counted), and nothing is sent to
an end before it has sent something itself: the relay never aims traffic anywhere.
"""

from libc.errno cimport EAGAIN, EINTR, errno
from libc.stdint cimport uint8_t

from .includes.sockets cimport MSG_DONTWAIT, MSG_TRUNC, recvmmsg, sendmmsg
from .wire cimport (BATCH_SIZE, DATAGRAM_BUF_BYTES, DROP_MALFORMED, DROP_TX_ERROR, Batch,
                    DirStats, EngineState, Forward, Wire, mark_dead)


cdef void pump_forward(EngineState *st, Wire *w, int side) noexcept nogil:
    """Moves up to BATCH_SIZE datagrams from end `side` to the other end; lock held."""
    cdef Batch *b = st.tx
    cdef Forward *f = w.forward
    cdef DirStats *s = &w.dirs[side]
    cdef int n, i, kept = 0, sent
    for i in range(BATCH_SIZE):
        b.iov[i].iov_base = b.bufs + i * DATAGRAM_BUF_BYTES
        b.iov[i].iov_len = DATAGRAM_BUF_BYTES
        b.msgs[i].msg_hdr.msg_iov = &b.iov[i]
        b.msgs[i].msg_hdr.msg_iovlen = 1
        b.msgs[i].msg_hdr.msg_name = &b.addrs[i]
        b.msgs[i].msg_hdr.msg_namelen = sizeof(b.addrs[i])
        b.msgs[i].msg_hdr.msg_control = NULL
        b.msgs[i].msg_hdr.msg_controllen = 0
        b.msgs[i].msg_hdr.msg_flags = 0
    n = recvmmsg(w.fd[side], b.msgs, BATCH_SIZE, MSG_DONTWAIT, NULL)
    if n <= 0:
        if n < 0 and errno != EAGAIN and errno != EINTR:
            mark_dead(w, side, s, st.epfd)
        return
    for i in range(n):
        if b.addrs[i].sin_addr.s_addr != f.allowed[side]:
            f.refused[side] += 1
            continue
        s.rx_packets += 1
        s.rx_bytes += b.msgs[i].msg_len
        if b.msgs[i].msg_hdr.msg_flags & MSG_TRUNC:
            s.drops[DROP_MALFORMED] += 1    # larger than any tunnel datagram
            continue
        f.latched[side] = b.addrs[i]
        # compacted in place: the datagram keeps its buffer, its iovec takes its length
        b.iov[kept].iov_base = b.iov[i].iov_base
        b.iov[kept].iov_len = b.msgs[i].msg_len
        kept += 1
    if kept == 0:
        return
    if f.latched[1 - side].sin_port == 0:
        s.drops[DROP_TX_ERROR] += kept   # the other end has not shown itself yet
        return
    for i in range(kept):
        b.msgs[i].msg_hdr.msg_iov = &b.iov[i]
        b.msgs[i].msg_hdr.msg_name = &f.latched[1 - side]
        b.msgs[i].msg_hdr.msg_namelen = sizeof(f.latched[1 - side])
    sent = sendmmsg(w.fd[1 - side], b.msgs, kept, MSG_DONTWAIT)
    if sent < 0:
        sent = 0
    for i in range(sent):
        s.tx_packets += 1
        s.tx_bytes += b.iov[i].iov_len
    s.drops[DROP_TX_ERROR] += kept - sent
