"""Packet engine: one native thread that moves IP packets between paired fds (TUN devices).

Pipeline, per wake-up of the worker, with the GIL never taken:

    epoll_wait -> for each readable fd: read(2) up to BATCH_SIZE packets
               -> classify (IPv4/IPv6 header sanity) -> write(2) to the wire's other fd

Every packet is counted per wire and direction; dropped ones by reason. Python calls
(add/remove a wire, read stats) take `st.lock` for microseconds and never touch packets.
Ownership: the engine never closes the fds it is given; the caller closes them after
remove_wire() returns, when the worker can no longer use them.
"""

from libc.errno cimport EAGAIN, EINTR, errno
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memset
from posix.fcntl cimport F_GETFL, F_SETFL, O_NONBLOCK, fcntl
from posix.unistd cimport close, read, write

from .classify cimport VERDICT_PASS, classify_ip
from .includes.epoll cimport (EFD_CLOEXEC, EPOLL_CLOEXEC, EPOLL_CTL_ADD, EPOLL_CTL_DEL,
                              EPOLLIN, epoll_create1, epoll_ctl, epoll_event, epoll_wait,
                              eventfd)
from .includes.pthread cimport (pthread_create, pthread_join, pthread_mutex_destroy,
                                pthread_mutex_init, pthread_mutex_lock, pthread_mutex_unlock)

import os

DROP_REASON_NAMES = ("not_ip", "malformed", "tx_error")
cdef uint64_t STOP_KEY = 0xFFFFFFFFFFFFFFFF


cdef inline uint64_t epoll_key(uint32_t slot, uint32_t gen, int side) noexcept nogil:
    return (<uint64_t>gen << 32) | (<uint64_t>slot << 1) | <uint64_t>side


cdef void pump(Wire *w, int side, uint8_t *buf, int epfd) noexcept nogil:
    """Moves up to BATCH_SIZE packets from w.fd[side] to the other side; lock held."""
    cdef DirStats *s = &w.dirs[side]
    cdef int out_fd = w.fd[1 - side]
    cdef Py_ssize_t n
    cdef int verdict
    for _ in range(BATCH_SIZE):
        n = read(w.fd[side], buf, PACKET_BUF_BYTES)
        if n <= 0:
            if n < 0 and errno != EAGAIN and errno != EINTR:
                # The device is gone (netns deleted, fd revoked): stop polling it, or the
                # level-triggered epoll would spin. Python sees it as `dead` in the stats.
                s.read_errors += 1
                w.dead[side] = 1
                epoll_ctl(epfd, EPOLL_CTL_DEL, w.fd[side], NULL)
            return
        s.rx_packets += 1
        s.rx_bytes += n
        verdict = classify_ip(buf, n)
        if verdict != VERDICT_PASS:
            s.drops[verdict] += 1
            continue
        if write(out_fd, buf, n) != n:
            s.drops[DROP_TX_ERROR] += 1
            continue
        s.tx_packets += 1
        s.tx_bytes += n


cdef void *run_worker(void *arg) noexcept nogil:
    cdef EngineState *st = <EngineState *>arg
    cdef epoll_event events[MAX_EVENTS]
    cdef int n, i, side
    cdef uint64_t key
    cdef uint32_t slot
    cdef Wire *w
    cdef bint stop = False
    while not stop:
        n = epoll_wait(st.epfd, events, MAX_EVENTS, -1)
        if n < 0:
            if errno == EINTR:
                continue
            break
        pthread_mutex_lock(&st.lock)
        for i in range(n):
            key = events[i].data.u64
            if key == STOP_KEY:
                stop = True
                continue
            slot = <uint32_t>((key >> 1) & 0x7FFFFFFF)
            side = <int>(key & 1)
            if slot >= st.capacity:
                continue
            w = &st.wires[slot]
            # An event fetched before remove_wire() took the lock refers to a dead key.
            if not w.in_use or w.gen != <uint32_t>(key >> 32) or w.dead[side]:
                continue
            pump(w, side, st.buf, st.epfd)
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
    """Doubles the wire table; returns 0, or -1 when out of memory."""
    cdef uint32_t old = st.capacity
    cdef uint32_t new = old * 2 if old else INITIAL_WIRES
    cdef Wire *wires = <Wire *>realloc(st.wires, new * sizeof(Wire))
    if wires == NULL:
        return -1
    st.wires = wires
    cdef uint32_t *free_slots = <uint32_t *>realloc(st.free_slots, new * sizeof(uint32_t))
    if free_slots == NULL:
        return -1
    st.free_slots = free_slots
    memset(&st.wires[old], 0, (new - old) * sizeof(Wire))
    # Push in reverse so the lowest slot is handed out first.
    for i in range(new - 1, old - 1, -1):
        st.free_slots[st.n_free] = i
        st.n_free += 1
    st.capacity = new
    return 0


cdef uint64_t _as_handle(handle) except? 0:
    if not isinstance(handle, int) or handle < 0 or handle >= 1 << 64:
        raise KeyError(f"no wire with handle {handle!r}")
    return handle


def _check_rc(int rc, str what):
    if rc < 0:
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


cdef class Engine:
    """Owns the worker thread and the wire table. Handles are opaque ints."""

    def __cinit__(self):
        self.st = <EngineState *>calloc(1, sizeof(EngineState))
        if self.st == NULL:
            raise MemoryError()
        self.st.epfd = -1
        self.st.stopfd = -1
        pthread_mutex_init(&self.st.lock, NULL)
        self.running = False

    def __dealloc__(self):
        if self.st == NULL:
            return
        if self.running:
            self._stop()
        if self.st.epfd >= 0:
            close(self.st.epfd)
        if self.st.stopfd >= 0:
            close(self.st.stopfd)
        pthread_mutex_destroy(&self.st.lock)
        free(self.st.wires)
        free(self.st.free_slots)
        free(self.st.buf)
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
            if self.st.buf == NULL:
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

    def add_wire(self, int fd_a, int fd_b):
        """Starts moving packets between fd_a and fd_b; returns the wire's handle.

        Both fds are switched to non-blocking mode. The caller keeps owning them.
        """
        if fd_a < 0 or fd_b < 0 or fd_a == fd_b:
            raise ValueError(f"add_wire needs two distinct open fds, got {fd_a} and {fd_b}")
        for fd in (fd_a, fd_b):
            flags = fcntl(fd, F_GETFL)
            _check_rc(flags, f"fcntl(F_GETFL, fd {fd})")
            _check_rc(fcntl(fd, F_SETFL, flags | O_NONBLOCK), f"fcntl(F_SETFL, fd {fd})")
        cdef EngineState *st = self.st
        cdef Wire *w
        cdef uint32_t slot
        cdef epoll_event ev
        cdef int rc = 0, err = 0
        with nogil:
            pthread_mutex_lock(&st.lock)
            if st.n_free == 0:
                rc = grow_locked(st)
            if rc == 0:
                st.n_free -= 1
                slot = st.free_slots[st.n_free]
                w = &st.wires[slot]
                w.fd[0] = fd_a
                w.fd[1] = fd_b
                w.dead[0] = 0
                w.dead[1] = 0
                memset(w.dirs, 0, sizeof(w.dirs))
                ev.events = EPOLLIN
                for side in range(2):
                    ev.data.u64 = epoll_key(slot, w.gen, side)
                    rc = epoll_ctl(st.epfd, EPOLL_CTL_ADD, w.fd[side], &ev)
                    if rc < 0:
                        err = errno
                        if side == 1:
                            epoll_ctl(st.epfd, EPOLL_CTL_DEL, w.fd[0], NULL)
                        st.free_slots[st.n_free] = slot
                        st.n_free += 1
                        break
                if rc == 0:
                    w.in_use = 1
            pthread_mutex_unlock(&st.lock)
        if rc < 0:
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

    def remove_wire(self, handle):
        """Stops the wire; returns its final stats. After this the worker never uses its fds."""
        cdef DirStats final[2]
        cdef int dead[2]
        cdef Wire *w
        cdef uint64_t h = _as_handle(handle)
        with nogil:
            pthread_mutex_lock(&self.st.lock)
        try:
            w = self._lookup_locked(h)
            if w == NULL:
                raise KeyError(f"no wire with handle {handle}")
            for side in range(2):
                if not w.dead[side]:
                    epoll_ctl(self.st.epfd, EPOLL_CTL_DEL, w.fd[side], NULL)
                final[side] = w.dirs[side]
                dead[side] = w.dead[side]
                add_stats(&self.st.retired, &w.dirs[side])
            w.in_use = 0
            w.gen += 1
            self.st.free_slots[self.st.n_free] = <uint32_t>h
            self.st.n_free += 1
        finally:
            pthread_mutex_unlock(&self.st.lock)
        return {"a_to_b": stats_dict(&final[0]), "b_to_a": stats_dict(&final[1]),
                "dead": (bool(dead[0]), bool(dead[1]))}

    def wire_stats(self, handle):
        """Counters of one wire: a_to_b counts packets read from fd_a, b_to_a from fd_b."""
        cdef DirStats snap[2]
        cdef int dead[2]
        cdef Wire *w
        cdef uint64_t h = _as_handle(handle)
        with nogil:
            pthread_mutex_lock(&self.st.lock)
        try:
            w = self._lookup_locked(h)
            if w == NULL:
                raise KeyError(f"no wire with handle {handle}")
            snap[0] = w.dirs[0]
            snap[1] = w.dirs[1]
            dead[0] = w.dead[0]
            dead[1] = w.dead[1]
        finally:
            pthread_mutex_unlock(&self.st.lock)
        return {"a_to_b": stats_dict(&snap[0]), "b_to_a": stats_dict(&snap[1]),
                "dead": (bool(dead[0]), bool(dead[1]))}

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
        return result


def classify(const uint8_t[::1] packet):
    """The engine's verdict on one packet: 'pass' or a drop reason name (for tests)."""
    cdef int verdict = classify_ip(&packet[0] if packet.shape[0] else NULL, packet.shape[0])
    return "pass" if verdict == VERDICT_PASS else DROP_REASON_NAMES[verdict]
