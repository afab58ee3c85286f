# The packet engine's Python-facing class; its C state lives in wire.pxd, the pipeline is
# written out at the top of engine.pyx.
from libc.stdint cimport uint64_t

from .includes.pthread cimport pthread_t
from .wire cimport EngineState, Wire


cdef class Engine:
    cdef EngineState *st
    cdef pthread_t thread
    cdef bint running
    cdef dict owners            # handle -> the objects whose stages the wire runs

    cdef void _stop(self) noexcept
    cdef Wire *_lookup_locked(self, uint64_t handle) noexcept nogil
    cdef object _add(self, int kind, int fd_a, int fd_b, object peer, double keepalive_s,
                     int vnet_hdr, bint l2)
    cdef dict _describe_locked(self, Wire *w)
