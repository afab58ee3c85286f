# Local wires: TUN to TUN on one engine (local.pyx).
from .wire cimport EngineState, Wire

cdef void pump_local(EngineState *st, Wire *w, int side) noexcept nogil
