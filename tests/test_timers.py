import asyncio

from nsmd.testing.fake_clock import FakeClock
from nsmd.timers import TimerSet


async def test_keys_fire_once_in_deadline_order_and_rearming_moves_them():
    clock = FakeClock(start=0.0)
    fired: list[tuple[float, str]] = []

    async def action(key: str) -> None:
        fired.append((clock.time(), key))

    timers = TimerSet(clock, action)
    timers.arm("a", 10)
    timers.arm("b", 5)
    timers.arm("c", 7)
    timers.arm("a", 3)      # moved earlier
    timers.disarm("c")
    await clock.run(20)
    assert fired == [(3, "a"), (5, "b")]
    assert timers.armed() == {}
    timers.arm("d", 30)
    timers.arm("d", 40)     # moved later: only one firing, at 40
    await clock.run(30)
    assert fired[-1] == (40, "d") and len(fired) == 3
    assert len(clock.pending()) == 0  # no clock timer left behind


async def test_stop_cancels_timers_and_running_actions():
    clock = FakeClock(start=0.0)
    started = asyncio.Event()

    async def slow(key: str) -> None:
        started.set()
        await asyncio.sleep(10)

    timers = TimerSet(clock, slow)
    timers.arm("x", 1)
    timers.arm("y", 100)
    clock.advance(1)
    await started.wait()
    timers.stop()
    await asyncio.sleep(0)
    assert timers.armed() == {} and clock.pending() == []


async def test_churn_leaves_no_stale_entries_behind():
    """Keys armed and disarmed long before their deadlines (connect, close) must not pile
    up until those deadlines; the live ones still fire."""
    clock = FakeClock(start=0.0)
    fired: list[str] = []

    async def action(key: str) -> None:
        fired.append(key)

    timers = TimerSet(clock, action)
    timers.arm("kept", 500)
    for i in range(10_000):
        timers.arm(f"k{i}", 600 + i)
        timers.arm(f"k{i}", 700 + i)  # re-armed: its first entry goes stale too
        timers.disarm(f"k{i}")
    assert len(timers._heap) <= 2 * len(timers.armed()) + 64
    await clock.run(1000)
    assert fired == ["kept"]


async def test_a_backoff_doubles_to_its_ceiling_on_the_clock_and_resets():
    from nsmd.clock import backoff

    clock = FakeClock()
    pause = backoff(clock, 0.2, 1.0)
    assert [pause.step() for _ in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    pause.reset()
    waiting = asyncio.ensure_future(pause.wait())
    await asyncio.sleep(0)
    clock.advance(0.19)
    await asyncio.sleep(0)
    assert not waiting.done()              # waits on the clock, not the loop
    clock.advance(0.01)
    await asyncio.sleep(0)
    assert waiting.done() and pause.next_s == 0.4
