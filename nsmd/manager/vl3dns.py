"""Runs a resolver (nsmd/vl3/dns.py) for each hosted vL3 endpoint that holds a subnet,
on its router address, and stops it when the endpoint goes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from nsmd.clock import Clock, every
from nsmd.errors import NsmdError
from nsmd.hosting import Hosting
from nsmd.registry import RegistryView
from nsmd.vl3 import subnets
from nsmd.vl3.dns import Resolver

CHECK_S = 0.5
log = logging.getLogger("nsmd.vl3.dns")


class Vl3Resolvers:
    def __init__(self, hosting: Hosting, registry: RegistryView, clock: Clock,
                 names: Callable[[str, str], set[str]], upstream: list[tuple[str, int]]):
        self.hosting = hosting
        self.registry = registry
        self.clock = clock
        self.names = names          # (endpoint, DNS label) -> its clients' addresses
        self.upstream = upstream
        self.running: dict[str, tuple[str, str, Resolver]] = {}  # endpoint -> (ns, addr, it)

    async def run(self, stopping: asyncio.Event) -> None:
        try:
            async for _ in every(self.clock, CHECK_S, stopping):
                await self.sync()
        finally:
            for _, _, resolver in self.running.values():
                resolver.close()
            self.running.clear()

    async def sync(self) -> None:
        wanted = {}
        for name in self.hosting.vl3_names():
            spec, subnet = self.hosting.spec(name), self.hosting.vl3_subnet(name)
            if spec is not None and spec.vl3 is not None and subnet:
                wanted[name] = (spec.netns, subnets.router_address(subnet))
        for name, (ns, address, resolver) in list(self.running.items()):
            if wanted.get(name) != (ns, address):
                resolver.close()
                del self.running[name]
        for name, (ns, address) in wanted.items():
            if name not in self.running:
                await self._start(name, ns, address)

    async def _start(self, endpoint: str, ns: str, address: str) -> None:
        template = self.registry.endpoints.get(endpoint)
        service = template.network_service_names[0] if template else ""
        if not service:
            return
        resolver = Resolver(service, lambda label: self.names(endpoint, label),
                            lambda: self._peers(endpoint, service), self.upstream)
        try:
            await resolver.start(ns, address)
        except (OSError, NsmdError) as err:
            resolver.close()
            log.warning("vL3 endpoint %s: cannot serve DNS on %s:53 yet: %s", endpoint,
                        address, err)
            return
        self.running[endpoint] = (ns, address, resolver)
        log.info("vL3 endpoint %s: DNS for zone %s on %s:53", endpoint, service, address)

    def _peers(self, endpoint: str, service: str) -> list[tuple[str, str]]:
        return [(subnets.router_address(subnet), subnet)
                for nse in self.registry.endpoints_of(service)
                if nse.name != endpoint and (subnet := subnets.subnet_of(nse, service))]
