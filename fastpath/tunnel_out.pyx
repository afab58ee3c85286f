"""The tunnel's sending side, run by the engine's worker with the engine lock held:

    TUN read x BATCH --> classify --> [stages] --> (vnet header: checksum completion, or
    a super-packet cut into MSS segments, offload.pyx, each segment's payload sealed from
    where it lies) --> header + seal under the keypair's AEAD (keypair CURRENT,
    counter++) --> one UDP GSO sendmsg per run of equal-sized datagrams to one peer (a
    run of segments goes on across the super-packets of one read batch), sendmmsg
    otherwise

and the keepalives of idle tunnels (both of a relay wire). See engine.pyx for the whole
pipeline.
"""

from libc.errno cimport EAGAIN, EINTR, EINVAL, EIO, ENOPROTOOPT, EOPNOTSUPP, errno
from libc.stdint cimport uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy, memmove, memset
from posix.uio cimport iovec
from posix.unistd cimport read

from .aead cimport TAG_BYTES, seal_split
from .classify cimport VERDICT_MALFORMED, VERDICT_PASS, classify_ip
from .includes.sockets cimport (CMSG_DATA, CMSG_FIRSTHDR, CMSG_LEN, CMSG_SPACE, IPPROTO_UDP,
                                MSG_DONTWAIT, UDP_SEGMENT, cmsghdr, msghdr, sendmmsg, sendmsg)
from .offload cimport (GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_TCPV6, VNET_HDR_BYTES,
                       finish_partial_csum, le16, tcp_layout, tcp_segment_at)
from .stage cimport Packet
from .tunnel cimport (HEADER_BYTES, KP_ACTIVE, KP_CURRENT, OVERHEAD_BYTES, Keypair, Tunnel,
                      reject_after_messages, write_header)
from .wire cimport (BATCH_SIZE, DATAGRAM_BUF_BYTES, DROP_MALFORMED, DROP_NO_KEY, DROP_TOO_BIG,
                    DROP_TX_ERROR, KIND_TUNNEL, PACKET_BUF_BYTES, Batch, DirStats, EngineState,
                    Wire, classify_frame, frame_bytes, frame_packet, mark_dead, run_stages)

cdef enum:
    GSO_MAX_BYTES = 65507 - 8   # UDP payload limit, with margin
    GSO_MAX_SEGMENTS = 64       # datagrams per GSO send: UDP_MAX_SEGMENTS on older kernels


cdef int seal_into(EngineState *st, Tunnel *t, uint8_t *datagram,
                          int payload) noexcept nogil:
    """Header + sealed payload in place at `datagram`; returns the datagram size or -1."""
    return seal_segment_into(st, t, datagram, payload, NULL, 0)


cdef int seal_segment_into(EngineState *st, Tunnel *t, uint8_t *datagram, int head,
                           const uint8_t *tail, int tail_len) noexcept nogil:
    """seal_into() of a payload made of `head` bytes in place and `tail_len` bytes at
    `tail` (a segment's payload still in its super-packet), sealed into the datagram."""
    cdef Keypair *kp = &t.kp[KP_CURRENT]
    # A keypair the control plane failed to replace in time is spent: send nothing rather
    # than use keys past their life (rekeys come long before).
    if kp.state != KP_ACTIVE or kp.send_counter >= reject_after_messages() \
            or st.now >= kp.reject_at:
        return -1
    write_header(datagram, kp.remote_index, kp.send_counter)
    if seal_split(&st.aead, kp.suite, kp.send_key, kp.send_counter, datagram, HEADER_BYTES,
                  datagram + HEADER_BYTES, head, tail, tail_len) < 0:
        return -1
    kp.send_counter += 1
    return HEADER_BYTES + head + tail_len + TAG_BYTES


cdef int send_batch(EngineState *st, int count) noexcept nogil:
    """Sends tx->msgs[0:count]; returns how many went out, in order. Runs of datagrams to
    one peer with one size (the last may be shorter) go as one UDP GSO sendmsg over their
    iovecs: one pass through the kernel's stack, and one message at a receiver with UDP
    GRO, for a run of small packets as for a cut super-packet. The rest go by sendmmsg."""
    cdef int sent = 0, start = 0, end, run_end, rc
    while start < count:
        end = gso_run_end(st, start, count)
        if end - start >= 2 and not st.gso_off:
            rc = send_gso_run(st, start, end)
            if rc > 0:
                sent += end - start
                start = end
                continue
            if rc == 0:
                return sent   # the socket is full or failing: the rest is dropped
        elif st.gso_off:
            end = count
        else:
            # plain datagrams up to where the next run of two or more begins
            while end < count:
                run_end = gso_run_end(st, end, count)
                if run_end - end >= 2:
                    break
                end = run_end
        rc = send_plain(st, start, end)
        sent += rc
        if rc < end - start:
            return sent
        start = end
    return sent


cdef inline int gso_run_end(EngineState *st, int start, int count) noexcept nogil:
    """End (exclusive) of the run of datagrams from `start` that one GSO send can carry."""
    cdef msghdr *first = &st.tx.msgs[start].msg_hdr
    cdef size_t size = st.tx.iov[start].iov_len, total = size
    cdef int end = start + 1
    while end < count and end - start < GSO_MAX_SEGMENTS \
            and st.tx.msgs[end].msg_hdr.msg_name == first.msg_name \
            and st.tx.iov[end].iov_len <= size and total + size <= GSO_MAX_BYTES:
        total += st.tx.iov[end].iov_len
        end += 1
        if st.tx.iov[end - 1].iov_len < size:
            break             # a shorter one ends the run
    return end


cdef int send_gso_run(EngineState *st, int start, int end) noexcept nogil:
    """1 if tx[start:end] went out in one UDP GSO sendmsg; 0 if it was dropped (socket
    full or failing); -1 if this socket cannot do GSO (then it is not tried again)."""
    cdef msghdr msg
    cdef cmsghdr *cm
    cdef iovec whole
    cdef size_t total = 0
    cdef int i
    cdef bint contiguous = True   # a cut super-packet's datagrams lie back to back
    for i in range(start, end):
        total += st.tx.iov[i].iov_len
        if i > start and <uint8_t *>st.tx.iov[i].iov_base != \
                <uint8_t *>st.tx.iov[i - 1].iov_base + st.tx.iov[i - 1].iov_len:
            contiguous = False
    memset(&msg, 0, sizeof(msg))
    msg.msg_name = st.tx.msgs[start].msg_hdr.msg_name
    msg.msg_namelen = st.tx.msgs[start].msg_hdr.msg_namelen
    if contiguous:                # one iovec: the kernel copies in one run
        whole.iov_base = st.tx.iov[start].iov_base
        whole.iov_len = total
        msg.msg_iov = &whole
        msg.msg_iovlen = 1
    else:
        msg.msg_iov = &st.tx.iov[start]
        msg.msg_iovlen = end - start
    msg.msg_control = st.gso_cmsg
    msg.msg_controllen = CMSG_SPACE(sizeof(uint16_t))
    cm = CMSG_FIRSTHDR(&msg)
    cm.cmsg_level = IPPROTO_UDP
    cm.cmsg_type = UDP_SEGMENT
    cm.cmsg_len = CMSG_LEN(sizeof(uint16_t))
    (<uint16_t *>CMSG_DATA(cm))[0] = <uint16_t>st.tx.iov[start].iov_len
    while True:
        if sendmsg(st.udp_fd, &msg, MSG_DONTWAIT) == <Py_ssize_t>total:
            st.gso_sends += 1
            return 1
        if errno != EINTR:
            break
    if errno == EIO or errno == EINVAL or errno == ENOPROTOOPT or errno == EOPNOTSUPP:
        st.gso_off = 1        # this kernel or device cannot: stop trying
        return -1
    return 0


cdef int send_plain(EngineState *st, int start, int end) noexcept nogil:
    """sendmmsg of tx->msgs[start:end]; returns how many went out."""
    cdef int sent = 0, rc
    while start + sent < end:
        rc = sendmmsg(st.udp_fd, &st.tx.msgs[start + sent], end - start - sent, MSG_DONTWAIT)
        if rc <= 0:
            if rc < 0 and errno == EINTR:
                continue
            break
        sent += rc
    return sent


cdef int queue_datagram(EngineState *st, Wire *w, int count,
                               int size) noexcept nogil:
    """Adds tx slot `count` (sealed, `size` bytes) to the batch; flushes a full batch.
    Returns the new count."""
    cdef Batch *b = st.tx
    b.iov[count].iov_base = b.bufs + count * DATAGRAM_BUF_BYTES
    b.iov[count].iov_len = size
    b.msgs[count].msg_hdr.msg_name = &w.tunnel.peer
    b.msgs[count].msg_hdr.msg_namelen = sizeof(w.tunnel.peer)
    count += 1
    if count == BATCH_SIZE:
        return flush_batch(st, w, count)
    return count


cdef int flush_batch(EngineState *st, Wire *w, int count) noexcept nogil:
    cdef DirStats *s = &w.dirs[0]
    cdef int sent, i
    if count == 0:
        return 0
    if st.udp_fd < 0:
        s.drops[DROP_TX_ERROR] += count
        return 0
    sent = send_batch(st, count)
    s.tx_packets += sent
    for i in range(sent):
        s.tx_bytes += st.tx.iov[i].iov_len - OVERHEAD_BYTES
    s.drops[DROP_TX_ERROR] += count - sent
    return 0


cdef struct GsoRun:
    # Sealed segments waiting in gso_buf, back to back, for one UDP GSO send. A run
    # outlives the super-packet it started in: at MTU 1420 a 64 KiB super-packet is 46-47
    # segments and one send carries 45 sealed, so cutting each on its own cost two sends
    # (the second of one or two datagrams) per super-packet.
    Py_ssize_t pos              # bytes in gso_buf
    int dsize                   # the run's datagram size (only its last may be shorter)
    int segments


cdef void send_gso(EngineState *st, Wire *w, Py_ssize_t total, int dsize,
                   int segments) noexcept nogil:
    """Sends `segments` sealed datagrams lying back to back in gso_buf: slices of it in the
    (empty) send batch, which send_batch hands to the kernel as one UDP GSO sendmsg (the
    kernel cuts them apart after one pass through its stack), or by sendmmsg if the socket
    cannot do GSO."""
    cdef int i
    for i in range(segments):
        st.tx.iov[i].iov_base = st.gso_buf + i * dsize
        st.tx.iov[i].iov_len = dsize if i < segments - 1 else total - i * dsize
        st.tx.msgs[i].msg_hdr.msg_name = &w.tunnel.peer
        st.tx.msgs[i].msg_hdr.msg_namelen = sizeof(w.tunnel.peer)
    flush_batch(st, w, segments)


cdef void run_flush(EngineState *st, Wire *w, GsoRun *run) noexcept nogil:
    if run.segments:
        send_gso(st, w, run.pos, run.dsize, run.segments)
    run.pos = 0
    run.dsize = 0
    run.segments = 0


cdef int cut_and_seal(EngineState *st, Wire *w, const uint8_t *frame,
                      Py_ssize_t n, int count, GsoRun *run) noexcept nogil:
    """One TUN read with a virtio_net_hdr: a plain packet (its checksum finished if the
    sender left it to us) sealed into the send batch, or a TCP super-packet cut into
    segments sealed onto `run`. Whichever of the two is not used is flushed first (a
    tunnel keeps packet order). Returns the batch count."""
    cdef DirStats *s = &w.dirs[0]
    cdef const uint8_t *vnet = frame
    cdef uint8_t *pkt = <uint8_t *>frame + VNET_HDR_BYTES
    cdef Py_ssize_t plen = n - VNET_HDR_BYTES, ip_len, tcp_len, mss, index = 0
    cdef int gso = vnet[1] & ~GSO_ECN, size, seg
    cdef uint8_t *datagram
    if gso == GSO_NONE:
        if plen > DATAGRAM_BUF_BYTES - OVERHEAD_BYTES:
            s.drops[DROP_TOO_BIG] += 1
            return count
        run_flush(st, w, run)
        finish_partial_csum(pkt, plen, vnet)
        datagram = st.tx.bufs + count * DATAGRAM_BUF_BYTES
        memcpy(datagram + HEADER_BYTES, pkt, plen)
        size = seal_into(st, w.tunnel, datagram, <int>plen)
        if size < 0:
            s.drops[DROP_NO_KEY] += 1
            return count
        return queue_datagram(st, w, count, size)
    mss = le16(vnet + 4)
    if (gso != GSO_TCPV4 and gso != GSO_TCPV6) or mss == 0 or \
            tcp_layout(pkt, plen, gso == GSO_TCPV6, &ip_len, &tcp_len) < 0 or \
            ip_len + tcp_len + mss > DATAGRAM_BUF_BYTES - OVERHEAD_BYTES:
        s.drops[DROP_MALFORMED] += 1
        return count
    count = flush_batch(st, w, count)
    # The payload is sealed from the super-packet into the datagram (one pass over it);
    # a peer that takes partial TCP checksums spares the other pass, the checksum's.
    cdef bint partial = w.tunnel.kp[KP_CURRENT].send_csum_partial
    cdef Py_ssize_t hl = ip_len + tcp_len
    while True:
        datagram = st.gso_buf + run.pos
        seg = tcp_segment_at(pkt, plen, gso == GSO_TCPV6, ip_len, tcp_len, mss, index,
                             datagram + HEADER_BYTES, False, partial)
        if seg == 0:
            break
        size = seal_segment_into(st, w.tunnel, datagram, <int>hl, pkt + hl + index * mss,
                                 <int>(seg - hl))
        index += 1
        if size < 0:
            s.drops[DROP_NO_KEY] += 1
            continue
        if run.segments and size > run.dsize:
            # longer than the run's datagrams (a new super-packet's): it starts a new run
            run_flush(st, w, run)
            memmove(st.gso_buf, datagram, size)
        if run.dsize == 0:
            run.dsize = size
        run.pos += size
        run.segments += 1
        # UDP GSO wants equal sizes (only the last may be shorter) and <= 64 KiB in all;
        # the send batch holds BATCH_SIZE slices
        if size != run.dsize or run.pos + run.dsize > GSO_MAX_BYTES or \
                run.segments == BATCH_SIZE:
            run_flush(st, w, run)
    return count


cdef void pump_tun_to_tunnel(EngineState *st, Wire *w, double now) noexcept nogil:
    """Reads up to BATCH_SIZE packets from the TUN side, runs them through the stages,
    seals them and sends them in batches."""
    if w.vnet_hdr:
        pump_super_packets(st, w, now)
        return
    cdef DirStats *s = &w.dirs[0]
    cdef Tunnel *t = w.tunnel
    cdef Batch *b = st.tx
    cdef Packet *pkts = st.packets
    cdef uint8_t *datagram
    cdef Py_ssize_t n
    cdef int count = 0, read_count = 0, size, verdict, i
    # 1: read the batch, each packet straight behind its datagram's header room
    for _batch in range(BATCH_SIZE):
        datagram = b.bufs + read_count * DATAGRAM_BUF_BYTES
        n = read(w.fd[0], datagram + HEADER_BYTES, DATAGRAM_BUF_BYTES - OVERHEAD_BYTES + 1)
        if n <= 0:
            if n < 0 and errno != EAGAIN and errno != EINTR:
                mark_dead(w, 0, s, st.epfd)
            break
        s.rx_packets += 1
        s.rx_bytes += n
        if n > DATAGRAM_BUF_BYTES - OVERHEAD_BYTES:
            s.drops[DROP_TOO_BIG] += 1
            continue
        verdict = classify_frame(datagram + HEADER_BYTES, n, w.l2)
        if verdict != VERDICT_PASS:
            s.drops[verdict] += 1
            continue
        frame_packet(&pkts[read_count], datagram + HEADER_BYTES, n, 0, w.l2)
        read_count += 1
    # 2: the functions of this direction
    if read_count and w.stages[0] != NULL:
        run_stages(w.stages[0], pkts, read_count, now, s)
    # 3: seal in place what is left, in order, into the send batch
    for i in range(read_count):
        if pkts[i].drop:
            continue
        # the read's slot: datagram buffers are filled in read order
        datagram = b.bufs + i * DATAGRAM_BUF_BYTES
        n = frame_bytes(&pkts[i], datagram + HEADER_BYTES)
        size = seal_into(st, t, datagram, <int>n)
        if size < 0:
            s.drops[DROP_NO_KEY] += 1
            continue
        b.iov[count].iov_base = datagram
        b.iov[count].iov_len = size
        b.msgs[count].msg_hdr.msg_name = &t.peer
        b.msgs[count].msg_hdr.msg_namelen = sizeof(t.peer)
        count += 1
    if count == 0:
        return
    flush_batch(st, w, count)
    if st.udp_fd >= 0:
        t.last_tx = now


cdef void pump_super_packets(EngineState *st, Wire *w, double now) noexcept nogil:
    """The TUN side with vnet headers: one read may be a 64 KiB super-packet, which the
    stages see whole (a batch of one) before it is cut into sealed segments."""
    cdef DirStats *s = &w.dirs[0]
    cdef Packet *pkt = st.packets
    cdef Py_ssize_t n
    cdef int count = 0, verdict
    cdef GsoRun run
    run.pos = 0
    run.dsize = 0
    run.segments = 0
    for _batch in range(BATCH_SIZE):
        n = read(w.fd[0], st.buf, PACKET_BUF_BYTES)
        if n <= 0:
            if n < 0 and errno != EAGAIN and errno != EINTR:
                mark_dead(w, 0, s, st.epfd)
            break
        s.rx_packets += 1
        s.rx_bytes += n - VNET_HDR_BYTES
        verdict = classify_ip(st.buf + VNET_HDR_BYTES, n - VNET_HDR_BYTES) \
            if n > VNET_HDR_BYTES else VERDICT_MALFORMED
        if verdict != VERDICT_PASS:
            s.drops[verdict] += 1
            continue
        if w.stages[0] != NULL:
            frame_packet(pkt, st.buf, n, VNET_HDR_BYTES, 0)
            if run_stages(w.stages[0], pkt, 1, now, s):
                continue
            n = frame_bytes(pkt, st.buf)
        count = cut_and_seal(st, w, st.buf, n, count, &run)
    run_flush(st, w, &run)   # at most one of the two holds anything
    flush_batch(st, w, count)
    w.tunnel.last_tx = now


cdef void send_keepalives(EngineState *st, double now) noexcept nogil:
    cdef Wire *w
    cdef uint32_t i
    for i in range(st.capacity):
        w = &st.wires[i]
        if not w.in_use or w.tunnel == NULL:
            continue
        keepalive(st, w.tunnel, now)
        if w.tunnel2 != NULL:
            keepalive(st, w.tunnel2, now)


cdef void keepalive(EngineState *st, Tunnel *t, double now) noexcept nogil:
    """An empty packet if the tunnel sent nothing for keepalive_s (or one is due); and one
    to a direct path being probed."""
    cdef uint8_t *datagram = st.tx.bufs
    cdef int size
    if t.probe_due:
        t.probe_due = 0
        size = seal_into(st, t, datagram, 0)
        if size >= 0:
            st.tx.iov[0].iov_base = datagram
            st.tx.iov[0].iov_len = size
            st.tx.msgs[0].msg_hdr.msg_name = &t.probe
            st.tx.msgs[0].msg_hdr.msg_namelen = sizeof(t.probe)
            if send_batch(st, 1) == 1:
                t.probes_tx += 1
    if not t.keepalive_due and (t.keepalive_s <= 0 or now - t.last_tx < t.keepalive_s):
        return
    if t.peer.sin_port == 0:
        return
    size = seal_into(st, t, datagram, 0)
    if size < 0:
        return
    st.tx.iov[0].iov_base = datagram
    st.tx.iov[0].iov_len = size
    st.tx.msgs[0].msg_hdr.msg_name = &t.peer
    st.tx.msgs[0].msg_hdr.msg_namelen = sizeof(t.peer)
    if send_batch(st, 1) == 1:
        t.keepalives_tx += 1
    t.keepalive_due = 0
    t.last_tx = now
