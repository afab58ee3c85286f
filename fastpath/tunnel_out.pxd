# The tunnel's sending side (tunnel_out.pyx): what the engine's worker calls.
from .wire cimport EngineState, Wire

cdef void pump_tun_to_tunnel(EngineState *st, Wire *w, double now) noexcept nogil
cdef void send_keepalives(EngineState *st, double now) noexcept nogil
