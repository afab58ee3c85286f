# A NAT relay wire: sealed datagrams between two UDP sockets (forward.pyx).
from .wire cimport EngineState, Wire

cdef void pump_forward(EngineState *st, Wire *w, int side) noexcept nogil
