# The tunnel's receiving side (tunnel_in.pyx): what the engine's worker calls.
from .wire cimport EngineState

cdef void pump_udp(EngineState *st, double now) noexcept nogil
