# Sliding anti-replay window over 64-bit packet counters (RFC 6479): a ring of 64-bit
# blocks; moving the window forward only clears the blocks it passes. The readable twin
# is fastpath/reference.py (ReplayWindow).
from libc.stdint cimport uint64_t

cdef enum:
    REPLAY_BLOCKS = 32                          # 2048 bits of bitmap
    REPLAY_WINDOW = (REPLAY_BLOCKS - 1) * 64    # counters this far behind the newest pass

cdef struct ReplayState:
    uint64_t top        # newest accepted counter + 1; 0 = nothing accepted yet
    uint64_t bitmap[32]  # REPLAY_BLOCKS


cdef inline bint replay_would_accept(const ReplayState *w, uint64_t counter) noexcept nogil:
    """Cheap check before decrypting: False for a replay or a counter behind the window.

    2**64 - 1 is never valid (top would wrap); senders stop far earlier anyway.
    """
    if counter == <uint64_t>0xFFFFFFFFFFFFFFFF:
        return False
    if counter >= w.top:
        return True
    if w.top - 1 - counter >= REPLAY_WINDOW:
        return False
    return not (w.bitmap[(counter >> 6) % REPLAY_BLOCKS] >> (counter & 63)) & 1


cdef inline bint replay_accept(ReplayState *w, uint64_t counter) noexcept nogil:
    """Marks `counter` seen (call only after the packet authenticated); False if it was not new."""
    cdef uint64_t block = counter >> 6
    cdef uint64_t current, steps, i
    if counter == <uint64_t>0xFFFFFFFFFFFFFFFF:
        return False
    if counter >= w.top:
        if w.top:
            current = (w.top - 1) >> 6
            steps = block - current
            if steps > REPLAY_BLOCKS:
                steps = REPLAY_BLOCKS
            for i in range(1, steps + 1):
                w.bitmap[(current + i) % REPLAY_BLOCKS] = 0
        else:
            for i in range(REPLAY_BLOCKS):
                w.bitmap[i] = 0
        w.top = counter + 1
    elif w.top - 1 - counter >= REPLAY_WINDOW:
        return False
    cdef uint64_t bit = (<uint64_t>1) << (counter & 63)
    cdef uint64_t *slot = &w.bitmap[block % REPLAY_BLOCKS]
    if slot[0] & bit:
        return False
    slot[0] |= bit
    return True
