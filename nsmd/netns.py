"""Runs a function inside a network namespace, on a throwaway thread.

setns(2) changes only the calling thread, and Python 3.11 has no os.setns, so we call it
through ctypes on a fresh thread and let that thread end: fds opened there (TUN devices,
netlink sockets) keep their namespace when used from any other thread.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import threading
from collections.abc import Callable
from typing import TypeVar

from nsmd.errors import DataplaneError

NETNS_RUN_DIR = "/var/run/netns"
CLONE_NEWNET = 0x40000000
T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)


def netns_path(netns: str) -> str:
    """The file behind a namespace name or path; "" stands for the daemon's own."""
    if not netns:
        return ""
    return netns if netns.startswith("/") else os.path.join(NETNS_RUN_DIR, netns)


def exists(netns: str) -> bool:
    return not netns or os.path.exists(netns_path(netns))


def enter(netns: str) -> None:
    """Moves the calling thread into `netns` (never call this on the event loop's thread)."""
    path = netns_path(netns)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise DataplaneError(f"network namespace {netns!r} does not exist ({path})") from None
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise DataplaneError(f"cannot enter network namespace {netns!r}: {os.strerror(err)}")
    finally:
        os.close(fd)


async def run_in(netns: str, fn: Callable[..., T], *args: object) -> T:
    """Runs fn(*args) on a new thread inside `netns` and returns its result."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def deliver(ok: bool, value: object) -> None:
        if future.cancelled():
            return
        if ok:
            future.set_result(value)  # type: ignore[arg-type]
        else:
            future.set_exception(value)  # type: ignore[arg-type]

    def work() -> None:
        try:
            if netns:
                enter(netns)
            result = fn(*args)
        except BaseException as err:  # delivered to the awaiting coroutine
            loop.call_soon_threadsafe(deliver, False, err)
        else:
            loop.call_soon_threadsafe(deliver, True, result)

    threading.Thread(target=work, name=f"netns:{netns or 'self'}", daemon=True).start()
    return await future
