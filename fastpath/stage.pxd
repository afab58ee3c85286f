# The packet stage ABI: what a network service function implements in Cython to act on a
# vWire's packets (`from nsmd.fastpath.stage cimport ...`; docs/plugins.md).
#
# A stage runs on an engine's worker thread, without the GIL and with the engine's lock
# held, over each batch of packets of one direction of one vWire, between reading the
# batch and writing (or sealing) it. It must not block, allocate per packet or call
# Python. It may drop a packet (set `drop`), shorten it, or rewrite bytes in place
# (addresses, ports, checksums); it may not lengthen it. Stages of a direction run in the
# order the endpoint's `functions` list them; a dropped packet is skipped by later stages
# and counted as `filtered` on the vWire.
#
# Lifetime: `ctx` belongs to the Python object that made the capsule (the engine keeps
# that object alive while the stage is installed, and swaps lists only under its lock).
from libc.stdint cimport uint8_t, uint16_t, uint32_t

cdef enum:
    STAGE_ABI_VERSION = 1
    MAX_STAGES = 8                  # per direction of a vWire
    # Semantic directions, whichever side of the engine a packet came from.
    DIR_CLIENT_TO_ENDPOINT = 0
    DIR_ENDPOINT_TO_CLIENT = 1
    # Packet.flags
    PKT_CSUM_PARTIAL = 1            # the L4 checksum field holds the folded pseudo-header
                                    # sum (the kernel finishes it): update it incrementally
                                    # like a full one (RFC 1624) and it stays right
    PKT_NOT_IP = 2                  # an Ethernet frame that carries no IP packet (ARP ...):
                                    # `data` is the whole frame; stages let it pass untouched

cdef struct Packet:
    uint8_t *data                   # an IPv4/IPv6 packet (checked well-formed), writable;
                                    # on an ETHERNET vWire the packet inside the frame
    uint32_t len                    # bytes at data; a stage may lower it, never raise it
    uint16_t segments               # > 1: a TCP super-packet that leaves as this many
    uint8_t flags                   # PKT_*
    uint8_t drop                    # set non-zero to drop the packet

cdef struct StageBatch:
    Packet *packets
    int count
    int direction                   # DIR_*
    double now                      # CLOCK_MONOTONIC seconds

ctypedef void (*stage_run_fn)(void *ctx, StageBatch *batch) noexcept nogil

cdef struct Stage:
    uint32_t abi                    # STAGE_ABI_VERSION
    stage_run_fn run
    void *ctx

# A PyCapsule carrying `stage` for Engine.set_stages(owner, ...): `owner`, the Python
# object holding the Stage and its ctx, is kept alive by the engine while installed.
cdef object stage_capsule(Stage *stage)
