"""A userspace netem for test underlays: drops and delays the IP packets routed through a
TUN device, then hands them back to the kernel to be routed on.

This kernel has no sch_netem (CONFIG_NET_SCH_NETEM is not set), so tests that need loss
and delay on the underlay route it through here instead (sandbox.routed_underlay). Runs
for a bounded time: `python -m nsmd.testing.impair DEV --loss 5 --delay-ms 50 --seconds 120`
inside the router namespace.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import os
import random
import select
import signal
import time

import pytun


def run(dev: str, loss: float, delay_s: float, seconds: float, seed: int) -> dict:
    tun = pytun.TunTapDevice(name=dev, flags=pytun.IFF_TUN | pytun.IFF_NO_PI)
    tun.up()
    os.set_blocking(tun.fileno(), False)
    rng = random.Random(seed)
    held: list[tuple[float, int, bytes]] = []
    order = itertools.count()
    counts = {"forwarded": 0, "dropped": 0}
    end = [time.monotonic() + seconds]
    signal.signal(signal.SIGTERM, lambda *_: end.__setitem__(0, 0.0))  # stop, then report
    while (now := time.monotonic()) < end[0]:
        wait = min(held[0][0] - now, 0.05) if held else 0.05
        try:
            readable = select.select([tun], [], [], max(0.0, wait))[0]
        except InterruptedError:
            continue
        if readable:
            for _ in range(256):
                try:
                    packet = os.read(tun.fileno(), 65536)
                except BlockingIOError:
                    break
                if rng.random() * 100 < loss:
                    counts["dropped"] += 1
                    continue
                heapq.heappush(held, (time.monotonic() + delay_s, next(order), packet))
        now = time.monotonic()
        while held and held[0][0] <= now:
            os.write(tun.fileno(), heapq.heappop(held)[2])
            counts["forwarded"] += 1
    tun.close()
    return counts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dev")
    p.add_argument("--loss", type=float, default=0.0, help="percent of packets dropped")
    p.add_argument("--delay-ms", type=float, default=0.0)
    p.add_argument("--seconds", type=float, default=120.0, help="stop after this long")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    print(run(args.dev, args.loss, args.delay_ms / 1000, args.seconds, args.seed), flush=True)


if __name__ == "__main__":
    main()
