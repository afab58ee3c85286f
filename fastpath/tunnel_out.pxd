# The tunnel's sending side (tunnel_out.pyx): what the engine's worker calls.
from libc.stdint cimport uint8_t

from .tunnel cimport Tunnel
from .wire cimport EngineState, Wire

cdef int seal_into(EngineState *st, Tunnel *t, uint8_t *datagram, int payload) noexcept nogil
cdef int send_batch(EngineState *st, int count) noexcept nogil
cdef void pump_tun_to_tunnel(EngineState *st, Wire *w, double now) noexcept nogil
cdef void send_keepalives(EngineState *st, double now) noexcept nogil
