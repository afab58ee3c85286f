"""The tunnel's receiving side, run by the engine's worker with the engine lock held:

    recvmmsg (32 x 64 KiB; with UDP GRO a message holds many datagrams of one size) -->
    header checks --> receiver index -> wire and keypair (within its life) --> replay
    pre-check --> open in place --> replay mark (a packet under NEXT promotes it) -->
    counted, and the tunnel's peer moved to the datagram's source (roaming) --> classify --> [stages, per wire] --> runs of one TCP or UDP flow merged
    (gro.pyx) --> one write per run to the TUN device; or, on a relay wire, sealed again
    in place for its other tunnel and sent on

See engine.pyx for the whole pipeline.
"""

from libc.errno cimport EINVAL, errno
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memset
from posix.uio cimport iovec, writev
from posix.unistd cimport write

from .aead cimport open_in_place
from .classify cimport VERDICT_PASS
from .gro cimport (GRO_HEAD_BYTES, GRO_MAX_SEGMENTS, Flow, flow_build, flow_run,
                   tcp_csum_to_kernel)
from .includes.sockets cimport (CMSG_DATA, CMSG_FIRSTHDR, CMSG_NXTHDR, IPPROTO_UDP,
                                MSG_DONTWAIT, MSG_TRUNC, UDP_GRO, cmsghdr, msghdr, recvmmsg,
                                sockaddr_in)
from .offload cimport VNET_HDR_BYTES
from .replay cimport replay_accept, replay_would_accept
from .stage cimport Packet
from .tunnel cimport (DIRECT_HOLD_MS, HEADER_BYTES, INDEX_SEQ_BITS, KP_ACTIVE, KP_CURRENT, KP_EMPTY, KP_NEXT,
                      KP_PREVIOUS, MSG_TYPE_DATA, OVERHEAD_BYTES, Keypair, Tunnel,
                      keypair_for, read_counter, read_index, reject_after_messages)
from .tunnel_out cimport seal_into, send_batch
from .wire cimport (BATCH_SIZE, DATAGRAM_BUF_BYTES, DROP_BAD_TAG, DROP_NO_KEY, DROP_REPLAY,
                    DROP_TX_ERROR, KIND_RELAY, RX_BUF_BYTES, RX_MSGS, RX_PENDING,
                    UDP_BAD_TYPE, UDP_OVERSIZE, UDP_TRUNCATED, UDP_UNKNOWN_INDEX, DirStats,
                    EngineState, RxBatch, StageList, Wire, classify_frame, frame_bytes,
                    frame_packet, run_stages, wire_tunnel)


cdef int open_datagram(EngineState *st, uint8_t *datagram, int length, double now,
                       const sockaddr_in *src, Wire **out, int *side_out) noexcept nogil:
    """Authenticates, de-duplicates and decrypts one datagram in place; returns the
    plaintext length (the packet is at datagram + HEADER_BYTES), its wire and the tunnel
    it came in on (a relay wire has two), or -1 if it was dropped (and counted) or was a
    keepalive. A datagram that authenticates from another address than the tunnel's peer
    moves the peer there (WireGuard's roaming: a peer behind a NAT whose mapping changed,
    or a host that moved); one that does not authenticate never does."""
    cdef uint32_t index, slot
    cdef uint64_t counter
    cdef Wire *w
    cdef Tunnel *t
    cdef Keypair *kp = NULL
    cdef DirStats *s
    cdef int plain, verdict, side = 0
    if length < OVERHEAD_BYTES:
        st.udp_drops[UDP_TRUNCATED] += 1
        return -1
    if datagram[0] != MSG_TYPE_DATA or datagram[1] or datagram[2] or datagram[3]:
        st.udp_drops[UDP_BAD_TYPE] += 1
        return -1
    index = read_index(datagram)
    slot = index >> INDEX_SEQ_BITS
    if slot >= st.capacity:
        st.udp_drops[UDP_UNKNOWN_INDEX] += 1
        return -1
    w = &st.wires[slot]
    if w.in_use and w.tunnel != NULL:
        kp = keypair_for(w.tunnel, index)
        if kp == NULL and w.tunnel2 != NULL:
            kp = keypair_for(w.tunnel2, index)
            side = 1
    if kp == NULL:
        st.udp_drops[UDP_UNKNOWN_INDEX] += 1
        return -1
    t = wire_tunnel(w, side)
    # a tunnel wire counts what the tunnel brings as dirs[1]; a relay, per side it came in
    s = &w.dirs[side if w.kind == KIND_RELAY else 1]
    if now >= kp.reject_at:
        s.drops[DROP_NO_KEY] += 1
        return -1
    counter = read_counter(datagram)
    if counter >= reject_after_messages() or not replay_would_accept(&kp.replay, counter):
        s.drops[DROP_REPLAY] += 1
        return -1
    plain = open_in_place(&st.aead, kp.suite, kp.recv_key, counter, datagram, HEADER_BYTES,
                          datagram + HEADER_BYTES, length - HEADER_BYTES)
    if plain < 0:
        s.drops[DROP_BAD_TAG] += 1
        return -1
    if not replay_accept(&kp.replay, counter):
        s.drops[DROP_REPLAY] += 1
        return -1
    # Counted only now: what an attacker sends cannot move the wire's counters, nor its peer.
    s.rx_packets += 1
    s.rx_bytes += length
    t.last_rx = now
    if src != NULL:
        roam(t, src, now)
    if kp == &t.kp[KP_NEXT]:
        # The peer sends under the new keypair: it has it, so we may send with it too.
        t.kp[KP_PREVIOUS] = t.kp[KP_CURRENT]
        t.kp[KP_CURRENT] = t.kp[KP_NEXT]
        t.kp[KP_CURRENT].state = KP_ACTIVE
        t.kp[KP_NEXT].state = KP_EMPTY
    if plain == 0:
        t.keepalives_rx += 1
        return -1
    verdict = classify_frame(datagram + HEADER_BYTES, plain, w.l2)
    if verdict != VERDICT_PASS:
        s.drops[verdict] += 1
        return -1
    out[0] = w
    side_out[0] = side
    return plain


cdef inline void roam(Tunnel *t, const sockaddr_in *src, double now) noexcept nogil:
    """The tunnel's peer moves to an authenticated datagram's source (WireGuard's
    roaming), except back to a relay while the peer is heard directly."""
    cdef bint from_relay = t.relay.sin_port != 0 and \
        t.relay.sin_addr.s_addr == src.sin_addr.s_addr and t.relay.sin_port == src.sin_port
    if not from_relay:
        t.last_direct_rx = now
    if t.peer.sin_addr.s_addr == src.sin_addr.s_addr and t.peer.sin_port == src.sin_port:
        return
    if from_relay and now - t.last_direct_rx < DIRECT_HOLD_MS / 1000.0:
        return
    t.peer.sin_addr.s_addr = src.sin_addr.s_addr
    t.peer.sin_port = src.sin_port
    t.roams += 1


cdef void write_one(Wire *w, uint8_t *packet, int plain) noexcept nogil:
    """Writes one decrypted packet to the wire's TUN device, where it lies (the datagram
    header before it leaves room for a virtio_net_hdr)."""
    cdef DirStats *s = &w.dirs[1]
    cdef uint8_t *start = packet
    cdef int size = plain
    if w.vnet_hdr:
        start -= VNET_HDR_BYTES
        size += VNET_HDR_BYTES
        # TCP: its checksum to the kernel, as in a merged write (the peer may have left
        # it partial: engine.install_keypair). Else a zeroed header: checksums complete.
        if w.l2 or not tcp_csum_to_kernel(packet, plain, start):
            memset(start, 0, VNET_HDR_BYTES)
    if w.dead[0] or write(w.fd[0], start, size) != size:
        s.drops[DROP_TX_ERROR] += 1
        return
    s.tx_packets += 1
    s.tx_bytes += plain


cdef void stage_pending(EngineState *st, Wire **wires, uint8_t *sides, uint8_t **packets,
                        int *plains, int count) noexcept nogil:
    """Runs each wire's receive stages over its packets of this round, in runs of one wire
    and tunnel; a dropped packet's length becomes 0 (write_pending skips it)."""
    cdef int i = 0, j, k, side
    cdef Wire *w
    cdef StageList *stages
    cdef Packet *pkts = st.packets
    while i < count:
        w = wires[i]
        side = sides[i]
        j = i + 1
        while j < count and wires[j] == w and sides[j] == side:
            j += 1
        stages = w.stages[side if w.kind == KIND_RELAY else 1]
        if stages != NULL:
            for k in range(i, j):
                frame_packet(&pkts[k - i], packets[k], plains[k], 0, w.l2)
            run_stages(stages, pkts, j - i, st.now, &w.dirs[side if w.kind == KIND_RELAY
                                                          else 1])
            for k in range(i, j):
                plains[k] = 0 if pkts[k - i].drop else <int>frame_bytes(&pkts[k - i],
                                                                        packets[k])
        i = j


cdef int relay_one(EngineState *st, Wire *w, int side, uint8_t *packet, int plain,
                   int count) noexcept nogil:
    """Seals a packet a relay wire received on `side` for its other tunnel, in place (the
    datagram it came in still has the header room before it and the tag room after), and
    queues it in the send batch; returns the batch count (sent when full)."""
    cdef Tunnel *t = wire_tunnel(w, 1 - side)
    cdef DirStats *s = &w.dirs[side]
    cdef uint8_t *datagram = packet - HEADER_BYTES
    cdef int size = seal_into(st, t, datagram, plain)
    if size < 0:
        s.drops[DROP_NO_KEY] += 1
        return count
    st.tx.iov[count].iov_base = datagram
    st.tx.iov[count].iov_len = size
    st.tx.msgs[count].msg_hdr.msg_name = &t.peer
    st.tx.msgs[count].msg_hdr.msg_namelen = sizeof(t.peer)
    st.relay_wires[count] = w
    st.relay_sides[count] = <uint8_t>side
    count += 1
    if count == BATCH_SIZE:
        return send_relayed(st, count)
    return count


cdef int send_relayed(EngineState *st, int count) noexcept nogil:
    """Sends the queued relayed datagrams; counts each on its wire; returns 0."""
    cdef int sent = send_batch(st, count) if st.udp_fd >= 0 else 0, i
    cdef DirStats *s
    for i in range(count):
        s = &st.relay_wires[i].dirs[st.relay_sides[i]]
        if i < sent:
            s.tx_packets += 1
            s.tx_bytes += st.tx.iov[i].iov_len - OVERHEAD_BYTES
            wire_tunnel(st.relay_wires[i], 1 - st.relay_sides[i]).last_tx = st.now
        else:
            s.drops[DROP_TX_ERROR] += 1
    return 0


cdef void write_pending(EngineState *st, Wire **wires, uint8_t *sides, uint8_t **packets,
                        int *plains, int count) noexcept nogil:
    """Writes a receive batch's packets in order, merging runs of one TCP or UDP flow (gro.pyx);
    relays what relay wires received."""
    cdef int i = 0, j, k, end, size, relayed = 0
    cdef Flow flow
    cdef uint8_t head[GRO_HEAD_BYTES]
    cdef iovec iov[GRO_MAX_SEGMENTS + 1]
    cdef Wire *w
    while i < count:
        w = wires[i]
        if plains[i] == 0:      # dropped by a stage
            i += 1
            continue
        if w.kind == KIND_RELAY:
            relayed = relay_one(st, w, sides[i], packets[i], plains[i], relayed)
            i += 1
            continue
        if not w.vnet_hdr:
            write_one(w, packets[i], plains[i])
            i += 1
            continue
        end = i + 1
        while end < count and wires[end] == w:
            end += 1
        j = flow_run(&flow, packets, plains, i, end, not st.uso_off)
        if j - i == 1:
            write_one(w, packets[i], plains[i])
        else:
            size = flow_build(&flow, head, &packets[i], &plains[i], iov)
            if not w.dead[0] and writev(w.fd[0], iov, flow.count + 1) == size:
                w.dirs[1].tx_packets += j - i
                w.dirs[1].tx_bytes += size - VNET_HDR_BYTES
                if flow.udp:
                    st.uso_writes += 1
            elif flow.udp and not w.dead[0] and errno == EINVAL:
                st.uso_off = 1  # a kernel without USO on TUN (before 6.2): one at a time
                for k in range(i, j):
                    write_one(w, packets[k], plains[k])
            else:
                w.dirs[1].drops[DROP_TX_ERROR] += j - i
        i = j
    if relayed:
        send_relayed(st, relayed)


cdef int gro_size(msghdr *hdr) noexcept nogil:
    """The datagram size of a UDP GRO message (its UDP_GRO control message), or 0."""
    cdef cmsghdr *cm = CMSG_FIRSTHDR(hdr)
    while cm != NULL:
        if cm.cmsg_level == IPPROTO_UDP and cm.cmsg_type == UDP_GRO:
            return (<int *>CMSG_DATA(cm))[0]
        cm = CMSG_NXTHDR(hdr, cm)
    return 0


cdef void take(EngineState *st, uint8_t *datagram, int length, double now,
               const sockaddr_in *src, int *ready) noexcept nogil:
    cdef Wire *w
    cdef RxBatch *b = st.rx
    cdef int plain, side
    if length > DATAGRAM_BUF_BYTES:
        st.udp_drops[UDP_OVERSIZE] += 1
        return
    plain = open_datagram(st, datagram, length, now, src, &w, &side)
    if plain > 0 and ready[0] < RX_PENDING:
        b.pend_wires[ready[0]] = w
        b.pend_data[ready[0]] = datagram + HEADER_BYTES
        b.pend_len[ready[0]] = plain
        b.pend_side[ready[0]] = <uint8_t>side
        ready[0] += 1


cdef void pump_udp(EngineState *st, double now) noexcept nogil:
    """Receives in rounds of RX_MSGS messages until the socket is drained (at most 4
    rounds per wake-up). A message is one datagram, or with UDP GRO many of one size."""
    cdef RxBatch *b = st.rx
    cdef int n, i, ready, size, length, off
    cdef uint8_t *base
    for _round in range(4):
        for i in range(RX_MSGS):
            b.iov[i].iov_base = b.bufs + i * RX_BUF_BYTES
            b.iov[i].iov_len = RX_BUF_BYTES
            b.msgs[i].msg_hdr.msg_name = &b.addrs[i]
            b.msgs[i].msg_hdr.msg_namelen = sizeof(b.addrs[i])
            b.msgs[i].msg_hdr.msg_control = &b.cmsg[i * 8]
            b.msgs[i].msg_hdr.msg_controllen = 8 * sizeof(uint64_t)
            b.msgs[i].msg_hdr.msg_flags = 0
        n = recvmmsg(st.udp_fd, b.msgs, RX_MSGS, MSG_DONTWAIT, NULL)
        if n <= 0:
            return
        ready = 0
        for i in range(n):
            if b.msgs[i].msg_hdr.msg_flags & MSG_TRUNC:
                st.udp_drops[UDP_OVERSIZE] += 1
                continue
            base = b.bufs + i * RX_BUF_BYTES
            length = b.msgs[i].msg_len
            size = gro_size(&b.msgs[i].msg_hdr)
            if size <= 0:
                take(st, base, length, now, &b.addrs[i], &ready)
                continue
            st.gro_receives += 1
            off = 0
            while off < length:
                take(st, base + off, size if length - off > size else length - off, now,
                     &b.addrs[i], &ready)
                off += size
        stage_pending(st, b.pend_wires, b.pend_side, b.pend_data, b.pend_len, ready)
        write_pending(st, b.pend_wires, b.pend_side, b.pend_data, b.pend_len, ready)
        if n < RX_MSGS:
            return
