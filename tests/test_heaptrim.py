"""The heap trimmer: once after a burst of work has gone quiet, never while idle; it
ends when the daemon stops."""

import asyncio

from nsmd import heaptrim


async def test_trims_once_after_work_stops_and_not_while_idle():
    assert heaptrim.malloc_trim is not None  # glibc: the daemon's target platform
    trimmer = heaptrim.HeapTrimmer(quiet_s=0.5)
    stopping = asyncio.Event()
    task = asyncio.ensure_future(trimmer.run(stopping))
    try:
        await asyncio.sleep(1.2)
        assert trimmer.trims == 0                # no work, nothing to give back
        for _ in range(12):                      # a burst: each request defers the trim
            trimmer.touch()
            await asyncio.sleep(0.05)
        assert trimmer.trims == 0
        await asyncio.sleep(1.5)
        assert trimmer.trims == 1                # once, after it went quiet
        await asyncio.sleep(1.2)
        assert trimmer.trims == 1
        stopping.set()                           # the daemon's stop awaits it: it must end
        await asyncio.wait_for(task, 2)
    finally:
        task.cancel()
