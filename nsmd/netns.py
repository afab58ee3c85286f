"""Runs functions inside network namespaces, on one long-lived thread per namespace.

setns(2) changes only the calling thread, and Python 3.11 has no os.setns, so each
namespace gets a worker thread that enters it once (through ctypes) and then runs what it
is given, in order. fds opened there (TUN devices, netlink sockets) keep their namespace
when used from any other thread. Workers are few and reused: a thread per operation
would cost a thread start, a setns and a netlink socket every time, and under load
thousands of threads' worth of memory. A worker whose namespace disappeared, or that sat
idle, is stopped (a thread inside a namespace keeps the namespace alive).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from nsmd.errors import DataplaneError

NETNS_RUN_DIR = "/var/run/netns"
CLONE_NEWNET = 0x40000000
IDLE_STOP_S = 30.0
T = TypeVar("T")
log = logging.getLogger("nsmd.netns")

_libc = ctypes.CDLL(None, use_errno=True)


def netns_path(netns: str) -> str:
    """The file behind a namespace name or path; "" stands for the daemon's own."""
    if not netns:
        return ""
    return netns if netns.startswith("/") else os.path.join(NETNS_RUN_DIR, netns)


def exists(netns: str) -> bool:
    return not netns or os.path.exists(netns_path(netns))


async def create_named(name: str) -> None:
    """Creates the named namespace /var/run/netns/NAME with lo up, as `ip netns add` does
    (by running it: forking this daemon instead, as pyroute2 does, lets the child's signals
    reach the parent's event loop through the shared wakeup fd)."""
    if not exists(name):
        await _ip("netns", "add", name)
    await run_in(name, _loopback_up)


async def remove_named(name: str) -> None:
    """Deletes a namespace this daemon created."""
    if exists(name):
        await _ip("netns", "delete", name)


async def _ip(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "ip", *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode:
        raise DataplaneError(f"ip {' '.join(args)}: {err.decode().strip()}")


def _loopback_up() -> None:
    from nsmd import rtnl

    rtnl.thread_rtnl().configure(socket.if_nametoindex("lo"))


def enter(netns: str) -> None:
    """Moves the calling thread into `netns` (never call this on the event loop's thread)."""
    path = netns_path(netns)
    try:
        # O_NONBLOCK: a FIFO at that path must not hang the worker (setns then refuses it).
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise DataplaneError(f"network namespace {netns!r} does not exist ({path})") from None
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise DataplaneError(f"cannot enter network namespace {netns!r}: {os.strerror(err)}")
    finally:
        os.close(fd)


class _Worker:
    """One thread inside one namespace, running submitted calls one after another."""

    def __init__(self, netns: str):
        self.netns = netns
        self.last_used = time.monotonic()
        self._queue: queue.SimpleQueue[tuple | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"netns:{netns or 'self'}",
                                        daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], args: tuple) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.last_used = time.monotonic()
        self._queue.put((fn, args, loop, future))
        return future

    def stop(self) -> None:
        self._queue.put(None)

    def _run(self) -> None:
        entered: BaseException | None = None
        if self.netns:
            try:
                enter(self.netns)
            except BaseException as err:  # every call will report it
                entered = err
        while (item := self._queue.get()) is not None:
            fn, args, loop, future = item
            try:
                if entered is not None:
                    raise entered
                ok, value = True, fn(*args)
            except BaseException as err:  # delivered to the awaiting coroutine
                ok, value = False, err
            loop.call_soon_threadsafe(_deliver, future, ok, value)
        from nsmd import rtnl  # the worker's netlink socket dies with it
        rtnl.close_thread_rtnl()


def _deliver(future: asyncio.Future, ok: bool, value: Any) -> None:
    if future.cancelled():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


_workers: dict[str, _Worker] = {}
_workers_lock = threading.Lock()


async def run_in(netns: str, fn: Callable[..., T], *args: object) -> T:
    """Runs fn(*args) inside `netns` (on its worker thread) and returns its result."""
    if not exists(netns):
        drop(netns)
        raise DataplaneError(f"network namespace {netns!r} does not exist "
                             f"({netns_path(netns)})")
    with _workers_lock:
        worker = _workers.get(netns)
        if worker is None:
            worker = _workers[netns] = _Worker(netns)
    return await worker.submit(fn, args)


def drop(netns: str) -> None:
    with _workers_lock:
        worker = _workers.pop(netns, None)
    if worker is not None:
        worker.stop()


def reap(idle_s: float = IDLE_STOP_S) -> int:
    """Stops workers idle for `idle_s` or whose namespace is gone; returns how many."""
    now = time.monotonic()
    with _workers_lock:
        doomed = [n for n, w in _workers.items()
                  if n and (now - w.last_used > idle_s or not exists(n))]
    for netns in doomed:
        drop(netns)
    return len(doomed)


def stop_all() -> None:
    with _workers_lock:
        names = list(_workers)
    for netns in names:
        drop(netns)
