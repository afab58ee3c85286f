"""Typed application state keys."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from nsmd.daemon import Daemon

DAEMON: web.AppKey[Daemon] = web.AppKey("daemon")
