"""Typed application state: what the API handlers may use of the daemon that serves them.

A protocol rather than the Daemon class, so the API does not depend on the module that
wires it (nsmd.daemon imports the API, not the other way round).
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from aiohttp import web

from nsmd.config import Config
from nsmd.dataplane import Dataplane
from nsmd.hosting import Hosting
from nsmd.identity.identity import Identity
from nsmd.manager.build import Manager
from nsmd.metrics import Metrics
from nsmd.peer.rendezvous import Hub
from nsmd.quotas import Quotas
from nsmd.registry import RegistryView
from nsmd.relay import Relay


class Served(Protocol):
    config: Config
    url: str
    started_at: float
    stopping: asyncio.Event
    id: Identity | None
    registry: RegistryView
    hosting: Hosting
    manager: Manager
    dataplane: Dataplane
    metrics: Metrics
    quotas: Quotas
    hub: Hub | None
    relay: Relay | None


DAEMON: web.AppKey[Served] = web.AppKey("daemon")
