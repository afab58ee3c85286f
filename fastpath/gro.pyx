"""Python entry point to receive coalescing, for tests (never on the data path)."""

from libc.stdint cimport uint8_t

from .gro cimport Flow, flow_accepts, flow_build, flow_start


def coalesce(packets):
    """The frames (virtio_net_hdr + packet) the engine writes for these packets, received
    in one batch for one wire."""
    cdef Flow flow
    cdef const uint8_t *segments[64]
    cdef int lengths[64]
    cdef const uint8_t[::1] view
    if len(packets) > 64:
        raise ValueError("at most 64 packets per batch")
    keep = [bytes(p) for p in packets]
    out = bytearray(65536 + 64)
    cdef uint8_t[::1] buf = out
    frames = []
    i = 0
    while i < len(keep):
        view = keep[i]
        j = i + 1
        if flow_start(&flow, &view[0], len(keep[i])):
            segments[0] = &view[0]
            lengths[0] = len(keep[i])
            while j < len(keep):
                view = keep[j]
                if not flow_accepts(&flow, &view[0], len(keep[j])):
                    break
                segments[j - i] = &view[0]
                lengths[j - i] = len(keep[j])
                j += 1
        if j - i == 1:
            frames.append(bytes(10) + keep[i])
        else:
            size = flow_build(&flow, &buf[0], segments, lengths)
            frames.append(bytes(out[:size]))
        i = j
    return frames
