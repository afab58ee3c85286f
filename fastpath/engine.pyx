"""Packet engine: one native thread that moves IP packets for every vWire of the host.

Pipeline, per wake-up of the worker, with the GIL never taken:

  local wire   TUN fd --read(2) x BATCH--> classify --write(2)--> the other TUN fd
               (with vnet headers both ends: 64 KiB TCP super-packets pass whole)
  tunnel, out  (tunnel_out.pyx) TUN fd --read(2) x BATCH--> classify --> (vnet header:
               a 64 KiB TCP super-packet cut into MSS segments, offload.pyx) --> header +
               seal in place (keypair CURRENT, counter++) --> UDP GSO sendmsg per
               super-packet or run of equal-sized datagrams, sendmmsg otherwise --> UDP socket
  tunnel, in   (tunnel_in.pyx) UDP socket --recvmmsg, UDP GRO--> header checks -->
               receiver index -> wire and keypair (within its life) --> replay pre-check
               --> open in place --> replay mark (a packet under NEXT promotes it) -->
               counted --> classify --> runs of one TCP flow (GSO) or UDP flow (USO)
               merged (gro.pyx) --write(2)--> TUN fd
  relay wire   (tunnel_in.pyx) a hop between two other hosts: opened from one tunnel -->
               [stages] --> sealed in place for the other --> sent as above
  forward wire (forward.pyx) a NAT relay: two UDP sockets, sealed datagrams passed from
               one end to the other's latched address, never opened
  every TICK_MS: keepalives for tunnels that sent nothing for keepalive_s, and probes of
               a direct path (tunnel_out)

This module owns the worker loop, the wire table and the Python API; the tunnel's two
directions are modules of their own, tunnel_out.pyx and tunnel_in.pyx, whose C functions
it calls through their .pxd (the pumps, wire.pxd's state).

Every packet is counted per wire and direction, drops by reason; datagrams that name no
wire are counted engine-wide. Python calls (add/remove wires, install keys, read stats)
take `st.lock` for microseconds and never touch packets. Ownership: the engine never closes
the fds it is given; the caller closes them after remove_wire() returns, when the worker
can no longer use them. The UDP socket is the caller's too.
"""

from cpython.pycapsule cimport PyCapsule_GetPointer, PyCapsule_IsValid
from libc.errno cimport EINTR, errno
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcpy, memset
from posix.fcntl cimport F_GETFL, F_SETFL, O_NONBLOCK, fcntl
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec
from posix.uio cimport iovec
from posix.unistd cimport close, read, write

from .classify cimport VERDICT_PASS, classify_ip
from .includes.epoll cimport (EFD_CLOEXEC, EPOLL_CLOEXEC, EPOLL_CTL_ADD, EPOLL_CTL_DEL,
                              EPOLLIN, epoll_create1, epoll_ctl, epoll_event, epoll_wait,
                              eventfd)
from .aead cimport aead_free, aead_init, sealable_alloc, sealable_free
from .includes.pthread cimport (pthread_create, pthread_join, pthread_mutex_destroy,
                                pthread_mutex_init, pthread_mutex_lock, pthread_mutex_unlock)
from .includes.sockets cimport AF_INET, mmsghdr, sockaddr_in
from .forward cimport pump_forward
from .local cimport pump_local
from .offload cimport VNET_HDR_BYTES
from .stage cimport MAX_STAGES, STAGE_ABI_VERSION, Packet, Stage
from .tunnel cimport INDEX_SEQ_BITS, KP_ACTIVE, KP_CURRENT, KP_EMPTY, KP_NEXT, KP_PREVIOUS, \
    KP_RECV_ONLY, Keypair, Tunnel, keypair_for
from .tunnel_in cimport pump_udp
from .tunnel_out cimport pump_tun_to_tunnel, send_keepalives
from .wire cimport (BATCH_SIZE, DATAGRAM_BUF_BYTES, DROP_REASONS, INITIAL_WIRES, KIND_FORWARD,
                    KIND_LOCAL, KIND_RELAY, KIND_TUNNEL, MAX_EVENTS, PACKET_BUF_BYTES, RX_BUF_BYTES, RX_MSGS,
                    RX_PENDING, STAGE_BATCH, TICK_MS, UDP_REASONS, Batch, DirStats,
                    EngineState, Forward, RxBatch, StageList, Wire, wire_tunnel)

import ipaddress
import os
import socket
import sys

from .aead import AEADS, suite_of

AEAD_NAMES = {suite: name for name, suite in AEADS.items()}
DROP_REASON_NAMES = ("not_ip", "malformed", "tx_error", "no_key", "bad_tag", "replay",
                     "too_big", "filtered")
cdef bytes STAGE_CAPSULE = b"nsmd.fastpath.stage.Stage"
UDP_DROP_NAMES = ("truncated", "oversize", "bad_type", "unknown_index")
# A keypair seals and opens nothing this long after it was installed (WireGuard's
# RejectAfterTime): if rekeys keep failing the tunnel goes quiet instead of wearing keys.
REJECT_AFTER_S = 180.0
cdef uint64_t STOP_KEY = 0xFFFFFFFFFFFFFFFF
cdef uint64_t UDP_KEY = 0xFFFFFFFFFFFFFFFE


cdef inline double now_s() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef inline uint64_t epoll_key(uint32_t slot, uint32_t gen, int side) noexcept nogil:
    return (<uint64_t>gen << 32) | (<uint64_t>slot << 1) | <uint64_t>side


cdef void *run_worker(void *arg) noexcept nogil:
    cdef EngineState *st = <EngineState *>arg
    cdef epoll_event events[MAX_EVENTS]
    cdef int n, i, side
    cdef uint64_t key
    cdef uint32_t slot
    cdef Wire *w
    cdef double now
    cdef bint stop = False
    while not stop:
        n = epoll_wait(st.epfd, events, MAX_EVENTS, TICK_MS)
        if n < 0:
            if errno == EINTR:
                continue
            break
        pthread_mutex_lock(&st.lock)
        now = now_s()
        st.now = now
        for i in range(n):
            key = events[i].data.u64
            if key == STOP_KEY:
                stop = True
                continue
            if key == UDP_KEY:
                if st.udp_fd >= 0:
                    pump_udp(st, now)
                continue
            slot = <uint32_t>((key >> 1) & 0x7FFFFFFF)
            side = <int>(key & 1)
            if slot >= st.capacity:
                continue
            w = &st.wires[slot]
            # An event fetched before remove_wire() took the lock refers to a dead key.
            if not w.in_use or w.gen != <uint32_t>(key >> 32) or w.dead[side]:
                continue
            if w.kind == KIND_LOCAL:
                pump_local(st, w, side)
            elif w.kind == KIND_FORWARD:
                pump_forward(st, w, side)
            else:
                pump_tun_to_tunnel(st, w, now)
        if now - st.last_tick >= TICK_MS / 1000.0:
            st.last_tick = now
            send_keepalives(st, now)
        pthread_mutex_unlock(&st.lock)
    return NULL


cdef void add_stats(DirStats *into, const DirStats *s) noexcept nogil:
    into.rx_packets += s.rx_packets
    into.rx_bytes += s.rx_bytes
    into.tx_packets += s.tx_packets
    into.tx_bytes += s.tx_bytes
    into.read_errors += s.read_errors
    for r in range(DROP_REASONS):
        into.drops[r] += s.drops[r]


cdef dict stats_dict(const DirStats *s):
    return {
        "rx_packets": s.rx_packets,
        "rx_bytes": s.rx_bytes,
        "tx_packets": s.tx_packets,
        "tx_bytes": s.tx_bytes,
        "read_errors": s.read_errors,
        "drops": {DROP_REASON_NAMES[r]: s.drops[r] for r in range(DROP_REASONS)},
    }


cdef int grow_locked(EngineState *st) noexcept nogil:
    """Doubles the wire table; returns 0, or -1 when out of memory (or out of indexes)."""
    cdef uint32_t old = st.capacity
    cdef uint32_t new = old * 2 if old else INITIAL_WIRES
    if new > (1 << (32 - INDEX_SEQ_BITS)):
        return -1
    # calloc + copy, not realloc + memset: a large table comes zeroed from fresh pages, and
    # its free half stays untouched (no memory) until wires take its slots.
    cdef Wire *wires = <Wire *>calloc(new, sizeof(Wire))
    if wires == NULL:
        return -1
    if old:
        memcpy(wires, st.wires, old * sizeof(Wire))
    free(st.wires)
    st.wires = wires
    cdef uint32_t *free_slots = <uint32_t *>realloc(st.free_slots, new * sizeof(uint32_t))
    if free_slots == NULL:
        return -1
    st.free_slots = free_slots
    # Push in reverse so the lowest slot is handed out first.
    for i in range(new - 1, old - 1, -1):
        st.free_slots[st.n_free] = i
        st.n_free += 1
    st.capacity = new
    return 0


cdef void link_iovs(mmsghdr *msgs, iovec *iov, int n) noexcept nogil:
    """Gives message i of a batch its own single iovec (buffers are set per round)."""
    cdef int i
    for i in range(n):
        msgs[i].msg_hdr.msg_iov = &iov[i]
        msgs[i].msg_hdr.msg_iovlen = 1


cdef RxBatch *new_rx_batch():
    cdef RxBatch *b = <RxBatch *>calloc(1, sizeof(RxBatch))
    if b == NULL:
        raise MemoryError()
    b.bufs = sealable_alloc(RX_MSGS * RX_BUF_BYTES)  # a relay seals in place
    b.pend_wires = <Wire **>malloc(RX_PENDING * sizeof(Wire *))
    b.pend_data = <uint8_t **>malloc(RX_PENDING * sizeof(uint8_t *))
    b.pend_len = <int *>malloc(RX_PENDING * sizeof(int))
    b.pend_side = <uint8_t *>malloc(RX_PENDING)
    if b.bufs == NULL or b.pend_wires == NULL or b.pend_data == NULL or b.pend_len == NULL \
            or b.pend_side == NULL:
        free_rx_batch(b)
        raise MemoryError()
    link_iovs(b.msgs, b.iov, RX_MSGS)
    return b


cdef void free_rx_batch(RxBatch *b) noexcept:
    if b != NULL:
        sealable_free(b.bufs)
        free(b.pend_wires)
        free(b.pend_data)
        free(b.pend_len)
        free(b.pend_side)
        free(b)


cdef Batch *new_batch():
    cdef Batch *b = <Batch *>calloc(1, sizeof(Batch))
    if b == NULL:
        raise MemoryError()
    b.bufs = sealable_alloc(BATCH_SIZE * DATAGRAM_BUF_BYTES)
    if b.bufs == NULL:
        free(b)
        raise MemoryError()
    link_iovs(b.msgs, b.iov, BATCH_SIZE)
    return b


cdef void free_batch(Batch *b) noexcept:
    if b != NULL:
        sealable_free(b.bufs)
        free(b)


cdef Tunnel *_new_tunnel(uint32_t addr, uint16_t port, double keepalive_s) except NULL:
    cdef Tunnel *t = <Tunnel *>calloc(1, sizeof(Tunnel))
    if t == NULL:
        raise MemoryError()
    t.peer.sin_family = AF_INET
    t.peer.sin_addr.s_addr = addr
    t.peer.sin_port = port
    t.keepalive_s = keepalive_s
    t.last_tx = now_s()
    return t


cdef dict _tunnel_dict(Tunnel *t):
    now = now_s()
    names = ("previous", "current", "next")
    return {
        "keypairs": {names[i]: {"local_index": t.kp[i].local_index,
                                "remote_index": t.kp[i].remote_index,
                                "send_counter": t.kp[i].send_counter,
                                "aead": AEAD_NAMES[t.kp[i].suite],
                                "csum_partial": bool(t.kp[i].send_csum_partial),
                                "age_s": now - t.kp[i].created}
                     for i in range(3) if t.kp[i].state != KP_EMPTY},
        "last_rx_age_s": now - t.last_rx if t.last_rx else None,
        "last_tx_age_s": now - t.last_tx,
        "keepalives_tx": t.keepalives_tx,
        "keepalives_rx": t.keepalives_rx,
        "peer": _address(&t.peer),
        "roams": t.roams,
        "probes_tx": t.probes_tx,
    }


cdef object _address(const sockaddr_in *a):
    """(IP, port) of a socket address."""
    # s_addr holds the address's bytes in network order: as they lie in memory
    return (socket.inet_ntoa(int(a.sin_addr.s_addr).to_bytes(4, sys.byteorder)),
            socket.ntohs(a.sin_port))


cdef uint64_t _as_handle(handle) except? 0:
    if not isinstance(handle, int) or handle < 0 or handle >= 1 << 64:
        raise KeyError(f"no wire with handle {handle!r}")
    return handle


def _peer(peer_ip, int peer_port):
    if not 0 <= peer_port < 65536:
        raise ValueError(f"peer port must be 0-65535, got {peer_port}")
    return int(ipaddress.IPv4Address(peer_ip)), peer_port


def _check_rc(int rc, str what):
    if rc < 0:
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _set_nonblocking(int fd):
    flags = fcntl(fd, F_GETFL)
    _check_rc(flags, f"fcntl(F_GETFL, fd {fd})")
    _check_rc(fcntl(fd, F_SETFL, flags | O_NONBLOCK), f"fcntl(F_SETFL, fd {fd})")


cdef class Engine:
    """Owns the worker thread and the wire table. Handles are opaque ints."""

    def __cinit__(self, double reject_after_s=REJECT_AFTER_S):
        self.st = <EngineState *>calloc(1, sizeof(EngineState))
        if self.st == NULL:
            raise MemoryError()
        self.st.reject_after_s = reject_after_s
        self.st.epfd = -1
        self.st.stopfd = -1
        self.st.udp_fd = -1
        pthread_mutex_init(&self.st.lock, NULL)
        self.running = False
        self.owners = {}

    def __dealloc__(self):
        if self.st == NULL:
            return
        if self.running:
            self._stop()
        if self.st.epfd >= 0:
            close(self.st.epfd)
        if self.st.stopfd >= 0:
            close(self.st.stopfd)
        aead_free(&self.st.aead)    # also if it was never made (ctx NULL)
        pthread_mutex_destroy(&self.st.lock)
        for i in range(self.st.capacity):
            if self.st.wires[i].tunnel != NULL:
                memset(self.st.wires[i].tunnel, 0, sizeof(Tunnel))
                free(self.st.wires[i].tunnel)
            if self.st.wires[i].tunnel2 != NULL:
                memset(self.st.wires[i].tunnel2, 0, sizeof(Tunnel))
                free(self.st.wires[i].tunnel2)
            free(self.st.wires[i].stages[0])
            free(self.st.wires[i].stages[1])
        free(self.st.wires)
        free(self.st.free_slots)
        free(self.st.buf)
        free(self.st.stage_bufs)
        free(self.st.packets)
        sealable_free(self.st.gso_buf)
        free_rx_batch(self.st.rx)
        free_batch(self.st.tx)
        free(self.st)
        self.st = NULL

    def start(self):
        """Starts the worker thread; idempotent."""
        if self.running:
            return
        if self.st.epfd < 0:
            self.st.epfd = epoll_create1(EPOLL_CLOEXEC)
            _check_rc(self.st.epfd, "epoll_create1")
            self.st.stopfd = eventfd(0, EFD_CLOEXEC)
            _check_rc(self.st.stopfd, "eventfd")
            self.st.buf = <uint8_t *>malloc(PACKET_BUF_BYTES)
            # Untouched (so not resident) until a local wire with stages uses it.
            self.st.stage_bufs = <uint8_t *>malloc(STAGE_BATCH * PACKET_BUF_BYTES)
            self.st.packets = <Packet *>calloc(RX_PENDING, sizeof(Packet))
            if aead_init(&self.st.aead) < 0 or self.st.buf == NULL \
                    or self.st.stage_bufs == NULL or self.st.packets == NULL:
                raise MemoryError()
            self.st.rx = new_rx_batch()
            self.st.tx = new_batch()
            self.st.gso_buf = sealable_alloc(65536 + DATAGRAM_BUF_BYTES)
            if self.st.gso_buf == NULL:
                raise MemoryError()
            with nogil:
                pthread_mutex_lock(&self.st.lock)
                rc = grow_locked(self.st)
                pthread_mutex_unlock(&self.st.lock)
            if rc < 0:
                raise MemoryError()
        cdef epoll_event ev
        ev.events = EPOLLIN
        ev.data.u64 = STOP_KEY
        _check_rc(epoll_ctl(self.st.epfd, EPOLL_CTL_ADD, self.st.stopfd, &ev), "epoll_ctl")
        rc = pthread_create(&self.thread, NULL, run_worker, self.st)
        if rc != 0:
            epoll_ctl(self.st.epfd, EPOLL_CTL_DEL, self.st.stopfd, NULL)
            raise OSError(rc, f"pthread_create: {os.strerror(rc)}")
        self.running = True

    def stop(self):
        """Stops and joins the worker; wires stay in the table. Idempotent."""
        if self.running:
            self._stop()

    cdef void _stop(self) noexcept:
        cdef uint64_t one = 1
        with nogil:
            write(self.st.stopfd, &one, sizeof(one))
            pthread_join(self.thread, NULL)
        epoll_ctl(self.st.epfd, EPOLL_CTL_DEL, self.st.stopfd, NULL)
        cdef uint64_t drain
        read(self.st.stopfd, &drain, sizeof(drain))
        self.running = False

    @property
    def is_running(self):
        return self.running

    def set_udp_socket(self, int fd):
        """Hands the engine the host's tunnel socket (bound UDP, IPv4). The caller keeps it."""
        if self.st.epfd < 0:
            raise RuntimeError("start the engine first")
        _set_nonblocking(fd)
        cdef epoll_event ev
        ev.events = EPOLLIN
        ev.data.u64 = UDP_KEY
        with nogil:
            pthread_mutex_lock(&self.st.lock)
            if self.st.udp_fd >= 0:
                epoll_ctl(self.st.epfd, EPOLL_CTL_DEL, self.st.udp_fd, NULL)
            self.st.udp_fd = fd
            rc = epoll_ctl(self.st.epfd, EPOLL_CTL_ADD, fd, &ev)
            if rc < 0:
                self.st.udp_fd = -1
            pthread_mutex_unlock(&self.st.lock)
        _check_rc(rc, "epoll_ctl(ADD udp)")

    def add_wire(self, int fd_a, int fd_b, int vnet_hdr=0, bint l2=False):
        """Starts moving packets between TUN fds fd_a and fd_b; returns the wire's handle.

        vnet_hdr: bytes of virtio_net_hdr both devices put before each packet (0 or 10,
        IFF_VNET_HDR). l2: TAP devices, Ethernet frames (an ETHERNET vWire). Both fds are
        switched to non-blocking mode; the caller keeps them.
        """
        if fd_a < 0 or fd_b < 0 or fd_a == fd_b:
            raise ValueError(f"add_wire needs two distinct open fds, got {fd_a} and {fd_b}")
        if vnet_hdr not in (0, VNET_HDR_BYTES):
            raise ValueError(f"vnet_hdr must be 0 or {VNET_HDR_BYTES} bytes, got {vnet_hdr}")
        return self._add(KIND_LOCAL, fd_a, fd_b, None, 0.0, vnet_hdr, l2)

    def add_tunnel_wire(self, int tun_fd, peer_ip="0.0.0.0", int peer_port=0,
                        double keepalive_s=0.0, int vnet_hdr=0, bint l2=False):
        """Starts a tunnel wire for TUN fd `tun_fd` towards peer_ip:peer_port (IPv4; port 0
        = not known yet, see set_peer). Packets from the TUN are dropped (no_key) until
        install_keypair(). vnet_hdr=10: the device is IFF_VNET_HDR with TSO; super-packets
        are segmented here."""
        if tun_fd < 0:
            raise ValueError(f"add_tunnel_wire needs an open fd, got {tun_fd}")
        if vnet_hdr not in (0, VNET_HDR_BYTES):
            raise ValueError(f"vnet_hdr must be 0 or {VNET_HDR_BYTES} bytes, got {vnet_hdr}")
        if l2 and vnet_hdr:
            raise ValueError("an ETHERNET tunnel wire takes no vnet headers (no segmentation "
                             "of frames)")
        return self._add(KIND_TUNNEL, tun_fd, -1, _peer(peer_ip, peer_port), keepalive_s,
                         vnet_hdr, l2)

    def add_relay_wire(self, double keepalive_s=0.0, bint l2=False):
        """A wire with no device: what one tunnel brings (side 0, towards the client) leaves
        through the other (side 1, towards the endpoint) and back, through the wire's
        stages; a hop of a composed chain between two other hosts. Each side is keyed and
        pointed like a tunnel wire (the `side` argument of set_peer, install_keypair ...)."""
        return self._add(KIND_RELAY, -1, -1, (0, 0), keepalive_s, 0, l2)

    def add_forward_wire(self, int sock_a, int sock_b, allowed_a, allowed_b):
        """A NAT relay between two vWire ends: datagrams that bound UDP socket `sock_a`
        receives from address `allowed_a` go out of `sock_b` to where the other end's last
        datagram came from (from `allowed_b`), and back; unopened (forward.pyx)."""
        if sock_a < 0 or sock_b < 0 or sock_a == sock_b:
            raise ValueError(f"add_forward_wire needs two distinct sockets, got {sock_a} "
                             f"and {sock_b}")
        cdef Forward *f = <Forward *>calloc(1, sizeof(Forward))
        if f == NULL:
            raise MemoryError()
        f.allowed[0] = socket.htonl(_peer(allowed_a, 0)[0])
        f.allowed[1] = socket.htonl(_peer(allowed_b, 0)[0])
        try:
            handle = self._add(KIND_FORWARD, sock_a, sock_b, None, 0.0, 0, False)
        except BaseException:
            free(f)
            raise
        cdef Wire *w
        cdef uint64_t h = handle
        with nogil:
            pthread_mutex_lock(&self.st.lock)
            w = self._lookup_locked(h)
            w.forward = f   # before its first datagram: the worker sees no event earlier
            pthread_mutex_unlock(&self.st.lock)
        return handle

    def probe(self, handle, peer_ip, int peer_port, int side=0):
        """Sends a keepalive to peer_ip:peer_port at the next tick, leaving the tunnel's
        peer as it is: a direct path tried while the tunnel runs relayed. If it gets
        through, the far end roams to where it came from and answers from there, and this
        end roams after it."""
        address, port = _peer(peer_ip, peer_port)
        cdef uint64_t h = _as_handle(handle)
        cdef Wire *w
        cdef Tunnel *t
        cdef uint32_t a = socket.htonl(address)
        cdef uint16_t p = socket.htons(port)
        with nogil:
            pthread_mutex_lock(&self.st.lock)
            w = self._lookup_locked(h)
            if w != NULL and w.tunnel != NULL:
                t = wire_tunnel(w, side)
                t.probe.sin_family = AF_INET
                t.probe.sin_addr.s_addr = a
                t.probe.sin_port = p
                t.probe_due = 1
            pthread_mutex_unlock(&self.st.lock)
        if w == NULL or w.tunnel == NULL:
            raise KeyError(f"no tunnel wire with handle {handle}")

    def set_relay(self, handle, relay_ip="0.0.0.0", int relay_port=0, int side=0):
        """The NAT relay port this tunnel also hears its peer through (port 0: none): while
        the peer is heard directly, a datagram the relay passes on does not move the
        tunnel back to it; once direct datagrams stop, one does."""
        address, port = _peer(relay_ip, relay_port)
        cdef uint64_t h = _as_handle(handle)
        cdef Wire *w
        cdef Tunnel *t
        cdef uint32_t a = socket.htonl(address)
        cdef uint16_t p = socket.htons(port)
        with nogil:
            pthread_mutex_lock(&self.st.lock)
            w = self._lookup_locked(h)
            if w != NULL and w.tunnel != NULL:
                t = wire_tunnel(w, side)
                t.relay.sin_family = AF_INET
                t.relay.sin_addr.s_addr = a
                t.relay.sin_port = p
                t.last_direct_rx = 0.0
            pthread_mutex_unlock(&self.st.lock)
        if w == NULL or w.tunnel == NULL:
            raise KeyError(f"no tunnel wire with handle {handle}")

    def set_peer(self, handle, peer_ip, int peer_port, int side=0):
        """Where a tunnel wire (or a relay wire's tunnel on `side`) sends its datagrams."""
        address, port = _peer(peer_ip, peer_port)
        cdef uint64_t h = _as_handle(handle)
        cdef Wire *w
        cdef uint32_t a = socket.htonl(address)
        cdef uint16_t p = socket.htons(port)
        with nogil:
            pthread_mutex_lock(&self.st.lock)
            w = self._lookup_locked(h)
            if w != NULL and w.tunnel != NULL:
                wire_tunnel(w, side).peer.sin_addr.s_addr = a
                wire_tunnel(w, side).peer.sin_port = p
            pthread_mutex_unlock(&self.st.lock)
        if w == NULL or w.tunnel == NULL:
            raise KeyError(f"no tunnel wire with handle {handle}")

    def request_keepalive(self, handle, int side=0):
        """Sends an empty packet at the next tick: proof to the peer that a new keypair is
        in use, so it switches to it even when no traffic flows."""
        cdef uint64_t h = _as_handle(handle)
        cdef Wire *w
        with nogil:
            pthread_mutex_lock(&self.st.lock)
            w = self._lookup_locked(h)
            if w != NULL and w.tunnel != NULL:
                wire_tunnel(w, side).keepalive_due = 1
            pthread_mutex_unlock(&self.st.lock)
        if w == NULL or w.tunnel == NULL:
            raise KeyError(f"no tunnel wire with handle {handle}")

    cdef object _add(self, int kind, int fd_a, int fd_b, object peer, double keepalive_s,
                     int vnet_hdr, bint l2):
        for fd in (fd_a, fd_b):
            if fd >= 0:
                _set_nonblocking(fd)
        cdef EngineState *st = self.st
        cdef Wire *w
        cdef uint32_t slot
        cdef epoll_event ev
        cdef int rc = 0, err = 0, side
        cdef int sides = 2 if kind == KIND_LOCAL or kind == KIND_FORWARD else \
            (1 if kind == KIND_TUNNEL else 0)
        cdef uint32_t peer_addr = 0
        cdef int peer_port = 0
        if peer is not None:
            peer_addr = socket.htonl(peer[0])
            peer_port = socket.htons(peer[1])
        # Only tunnel wires carry keys, counters and replay windows (~1 KiB): allocated apart
        # so local wires stay small.
        cdef Tunnel *tunnel = NULL
        cdef Tunnel *tunnel2 = NULL
        if kind == KIND_TUNNEL or kind == KIND_RELAY:
            tunnel = _new_tunnel(peer_addr, peer_port, keepalive_s)
        if kind == KIND_RELAY:
            tunnel2 = _new_tunnel(0, 0, keepalive_s)
        with nogil:
            pthread_mutex_lock(&st.lock)
            if st.n_free == 0:
                rc = grow_locked(st)
            if rc == 0:
                st.n_free -= 1
                slot = st.free_slots[st.n_free]
                w = &st.wires[slot]
                w.kind = kind
                w.vnet_hdr = vnet_hdr
                w.l2 = l2
                w.fd[0] = fd_a
                w.fd[1] = fd_b
                w.dead[0] = 0
                w.dead[1] = 0
                memset(w.dirs, 0, sizeof(w.dirs))
                w.tunnel = tunnel
                w.tunnel2 = tunnel2
                w.forward = NULL
                if tunnel != NULL:
                    tunnel.index_seq = (w.gen * 37) & 0xFF
                ev.events = EPOLLIN
                for side in range(sides):
                    ev.data.u64 = epoll_key(slot, w.gen, side)
                    rc = epoll_ctl(st.epfd, EPOLL_CTL_ADD, w.fd[side], &ev)
                    if rc < 0:
                        err = errno
                        if side == 1:
                            epoll_ctl(st.epfd, EPOLL_CTL_DEL, w.fd[0], NULL)
                        st.free_slots[st.n_free] = slot
                        st.n_free += 1
                        w.tunnel = NULL
                        w.tunnel2 = NULL
                        break
                if rc == 0:
                    w.in_use = 1
            pthread_mutex_unlock(&st.lock)
        if rc < 0:
            free(tunnel)
            free(tunnel2)
            if err == 0:
                raise MemoryError()
            raise OSError(err, f"epoll_ctl(ADD): {os.strerror(err)}")
        return (<uint64_t>w.gen << 32) | slot

    cdef Wire *_lookup_locked(self, uint64_t handle) noexcept nogil:
        cdef uint32_t slot = <uint32_t>handle  # low 32 bits: slot
        if slot >= self.st.capacity:
            return NULL
        cdef Wire *w = &self.st.wires[slot]
        if not w.in_use or w.gen != <uint32_t>(handle >> 32):
            return NULL
        return w

    def next_local_index(self, handle):
        """The receiver index the next keypair of this tunnel wire will be known by."""
        cdef uint64_t h = _as_handle(handle)
        cdef Wire *w
        cdef uint32_t index = 0
        cdef int i
        cdef bint taken
        with nogil:
            pthread_mutex_lock(&self.st.lock)
            w = self._lookup_locked(h)
            if w != NULL and w.tunnel != NULL:
                while True:  # skip sequence numbers still held by a live keypair (of either
                    # tunnel of a relay: one index space per wire)
                    w.tunnel.index_seq = (w.tunnel.index_seq + 1) & 0xFF
                    index = (<uint32_t>h << INDEX_SEQ_BITS) | w.tunnel.index_seq
                    taken = keypair_for(w.tunnel, index) != NULL or (
                        w.tunnel2 != NULL and keypair_for(w.tunnel2, index) != NULL)
                    if not taken:
                        break
            pthread_mutex_unlock(&self.st.lock)
        if w == NULL or w.tunnel == NULL:
            raise KeyError(f"no tunnel wire with handle {handle}")
        return index

    def install_keypair(self, handle, uint32_t local_index, uint32_t remote_index,
                        const uint8_t[::1] send_key, const uint8_t[::1] recv_key,
                        bint confirmed, int side=0, str aead="chacha20-poly1305",
                        bint csum_partial=False):
        """Installs a new keypair, for `aead`, on a tunnel wire (a relay wire's tunnel on
        `side`).

        csum_partial: the peer takes TCP segments whose checksum holds only the
        pseudo-header sum (its receive side hands TCP checksums to its kernel, see
        gro.tcp_csum_to_kernel): segments cut from super-packets are sent so, saving a
        pass over each payload.

        confirmed: the peer already uses it (we are the side that learned the peer's half
        last): it becomes CURRENT at once and the old one PREVIOUS. Otherwise it waits in
        NEXT, accepting packets, and becomes CURRENT when the first one arrives, so that
        neither side sends under a key the other cannot open yet.
        """
        if send_key.shape[0] != 32 or recv_key.shape[0] != 32:
            raise ValueError("keys must be 32 bytes")
        cdef int suite = suite_of(aead)
        if local_index >> INDEX_SEQ_BITS != <uint32_t>_as_handle(handle):
            raise ValueError("local_index was not issued for this wire")
        cdef uint64_t h = _as_handle(handle)
        cdef Wire *w
        cdef Keypair kp
        memset(&kp, 0, sizeof(kp))
        kp.local_index = local_index
        kp.remote_index = remote_index
        kp.suite = suite
        kp.send_csum_partial = csum_partial
        memcpy(kp.send_key, &send_key[0], 32)
        memcpy(kp.recv_key, &recv_key[0], 32)
        kp.created = now_s()
        kp.reject_at = kp.created + self.st.reject_after_s
        cdef Tunnel *t
        with nogil:
            pthread_mutex_lock(&self.st.lock)
            w = self._lookup_locked(h)
            if w != NULL and w.tunnel != NULL:
                t = wire_tunnel(w, side)
                if confirmed or t.kp[KP_CURRENT].state == KP_EMPTY:
                    kp.state = KP_ACTIVE
                    if t.kp[KP_CURRENT].state != KP_EMPTY:
                        t.kp[KP_PREVIOUS] = t.kp[KP_CURRENT]
                    t.kp[KP_CURRENT] = kp
                    t.kp[KP_NEXT].state = KP_EMPTY
                else:
                    kp.state = KP_RECV_ONLY
                    t.kp[KP_NEXT] = kp
            pthread_mutex_unlock(&self.st.lock)
        memset(&kp, 0, sizeof(kp))  # no key copies left on this stack
        if w == NULL or w.tunnel == NULL:
            raise KeyError(f"no tunnel wire with handle {handle}")

    def expire_previous(self, handle, uint32_t current_index, int side=0):
        """Forgets the PREVIOUS keypair, its grace period after the rekey that installed
        the keypair `current_index` being over. Only while that keypair is still CURRENT:
        after a later rekey, PREVIOUS is the keypair that one replaced, which the peer may
        still be sending under (its own grace period runs from that rekey)."""
        cdef uint64_t h = _as_handle(handle)
        cdef Wire *w
        cdef Tunnel *t
        with nogil:
            pthread_mutex_lock(&self.st.lock)
            w = self._lookup_locked(h)
            if w != NULL and w.tunnel != NULL:
                t = wire_tunnel(w, side)
                if (t.kp[KP_CURRENT].state != KP_EMPTY
                        and t.kp[KP_CURRENT].local_index == current_index):
                    memset(&t.kp[KP_PREVIOUS], 0, sizeof(Keypair))
            pthread_mutex_unlock(&self.st.lock)
        if w == NULL:
            raise KeyError(f"no wire with handle {handle}")

    def set_stages(self, handle, int side, int direction, owners):
        """Installs the stages packets read from `side` (0: fd_a, the TUN of a tunnel
        wire; 1: the other side) run through, in order, replacing any before; [] removes
        them. Each owner's stage_capsule() gives a Stage capsule (stage.pxd); the engine
        keeps the owners alive while their stages are installed. `direction` is the DIR_*
        the stages are told (client_to_endpoint = 0)."""
        if side not in (0, 1) or direction not in (0, 1):
            raise ValueError("side and direction must be 0 or 1")
        owners = list(owners)
        if len(owners) > MAX_STAGES:
            raise ValueError(f"at most {MAX_STAGES} stages per direction, got {len(owners)}")
        cdef uint64_t h = _as_handle(handle)
        cdef StageList *fresh = NULL
        cdef StageList *old = NULL
        cdef Stage *stage
        cdef Wire *w
        if owners:
            fresh = <StageList *>calloc(1, sizeof(StageList))
            if fresh == NULL:
                raise MemoryError()
            fresh.direction = direction
            for owner in owners:
                capsule = owner.stage_capsule()
                if not PyCapsule_IsValid(capsule, STAGE_CAPSULE):
                    free(fresh)
                    raise TypeError(f"{owner!r}.stage_capsule() did not return a "
                                    f"{STAGE_CAPSULE.decode()} capsule")
                stage = <Stage *>PyCapsule_GetPointer(capsule, STAGE_CAPSULE)
                if stage.abi != STAGE_ABI_VERSION or stage.run == NULL:
                    free(fresh)
                    raise ValueError(f"{owner!r}: stage ABI {stage.abi}, this engine runs "
                                     f"{STAGE_ABI_VERSION}")
                fresh.stages[fresh.count] = stage[0]
                fresh.count += 1
        with nogil:
            pthread_mutex_lock(&self.st.lock)
            w = self._lookup_locked(h)
            if w != NULL:
                old = w.stages[side]
                w.stages[side] = fresh
            pthread_mutex_unlock(&self.st.lock)
        if w == NULL:
            free(fresh)
            raise KeyError(f"no wire with handle {handle}")
        free(old)  # the worker takes the lock to use a list: nobody holds the old one now
        if owners:
            self.owners[(h, side)] = owners
        else:
            self.owners.pop((h, side), None)

    def remove_wire(self, handle):
        """Stops the wire; returns its final stats. After this the worker never uses its fds."""
        cdef uint64_t h = _as_handle(handle)
        cdef Wire *w
        released = []
        with nogil:
            pthread_mutex_lock(&self.st.lock)
        try:
            w = self._lookup_locked(h)
            if w == NULL:
                raise KeyError(f"no wire with handle {handle}")
            result = self._describe_locked(w)
            for side in range(2):
                if w.fd[side] >= 0 and not w.dead[side]:
                    epoll_ctl(self.st.epfd, EPOLL_CTL_DEL, w.fd[side], NULL)
            for side in range(2):
                add_stats(&self.st.retired, &w.dirs[side])
            for t in (<size_t>w.tunnel, <size_t>w.tunnel2):
                if t:
                    memset(<Tunnel *>t, 0, sizeof(Tunnel))  # keys do not outlive the wire
                    free(<Tunnel *>t)
            w.tunnel = NULL
            w.tunnel2 = NULL
            free(w.forward)
            w.forward = NULL
            for side in range(2):
                free(w.stages[side])
                w.stages[side] = NULL
                # released when this call returns, not while the lock is held
                released.append(self.owners.pop((h, side), None))
            w.in_use = 0
            w.gen += 1
            self.st.free_slots[self.st.n_free] = <uint32_t>h
            self.st.n_free += 1
        finally:
            pthread_mutex_unlock(&self.st.lock)
        return result

    def wire_stats(self, handle):
        """Counters of one wire: a_to_b counts packets read from fd_a (the TUN of a tunnel
        wire), b_to_a those from the other side; tunnel wires add their keypair state."""
        cdef uint64_t h = _as_handle(handle)
        cdef Wire *w
        with nogil:
            pthread_mutex_lock(&self.st.lock)
        try:
            w = self._lookup_locked(h)
            if w == NULL:
                raise KeyError(f"no wire with handle {handle}")
            return self._describe_locked(w)
        finally:
            pthread_mutex_unlock(&self.st.lock)

    cdef dict _describe_locked(self, Wire *w):
        result = {"a_to_b": stats_dict(&w.dirs[0]), "b_to_a": stats_dict(&w.dirs[1]),
                  "dead": (bool(w.dead[0]), bool(w.dead[1]))}
        if w.tunnel != NULL:
            result["tunnel"] = _tunnel_dict(w.tunnel)
        if w.tunnel2 != NULL:
            result["tunnel2"] = _tunnel_dict(w.tunnel2)
        if w.forward != NULL:
            result["forward"] = {
                "latched": [_address(&w.forward.latched[i]) if w.forward.latched[i].sin_port
                            else None for i in range(2)],
                "refused": [w.forward.refused[i] for i in range(2)]}
        return result

    def totals(self):
        """Sums over every wire ever added, both directions: monotonic, for /metrics."""
        cdef DirStats total
        memset(&total, 0, sizeof(total))
        cdef int live = 0
        with nogil:
            pthread_mutex_lock(&self.st.lock)
            add_stats(&total, &self.st.retired)
            for i in range(self.st.capacity):
                if self.st.wires[i].in_use:
                    live += 1
                    add_stats(&total, &self.st.wires[i].dirs[0])
                    add_stats(&total, &self.st.wires[i].dirs[1])
            pthread_mutex_unlock(&self.st.lock)
        result = stats_dict(&total)
        result["wires"] = live
        result["udp_drops"] = {UDP_DROP_NAMES[r]: self.st.udp_drops[r] for r in range(UDP_REASONS)}
        result["udp_gso_sends"] = self.st.gso_sends
        result["udp_gro_receives"] = self.st.gro_receives
        result["tun_uso_writes"] = self.st.uso_writes
        return result


def classify(const uint8_t[::1] packet):
    """The engine's verdict on one packet: 'pass' or a drop reason name (for tests)."""
    cdef int verdict = classify_ip(&packet[0] if packet.shape[0] else NULL, packet.shape[0])
    return "pass" if verdict == VERDICT_PASS else DROP_REASON_NAMES[verdict]
