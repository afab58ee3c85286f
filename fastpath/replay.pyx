"""A Python handle on the fast path's replay window, for differential tests."""

from libc.stdint cimport uint64_t
from libc.string cimport memset

from .replay cimport REPLAY_WINDOW, ReplayState, replay_accept, replay_would_accept

WINDOW = REPLAY_WINDOW


cdef class ReplayWindow:
    cdef ReplayState w

    def __cinit__(self):
        memset(&self.w, 0, sizeof(self.w))

    def would_accept(self, uint64_t counter):
        return replay_would_accept(&self.w, counter)

    def accept(self, uint64_t counter):
        return replay_accept(&self.w, counter)
