"""Other domains' registries, followed on demand and seen under qualified names.

The first time a name of domain E comes up, its registry is found (nsmd/domains.py) and
mirrored like a remote daemon's (registry/remote.py); every record also appears in this
daemon's own view as `name@E` (its services `svc@E`, with labels under them), so
selection, discovery and the tunnel to the endpoint's host work as for local names
(NSM's interdomain, without a proxy: the endpoint's host is called directly). An
endpoint this daemon hosts as `x@E` is registered in E's registry as `x`, pointing at
this daemon. The registry's daemon must present an ID of our trust domain or a federated
one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from nsmd.domains import Domains, split
from nsmd.errors import NotFound, SelectionError
from nsmd.model import NetworkService, NetworkServiceEndpoint, ServiceLabels
from nsmd.peer.client import PeerClient
from nsmd.registry.remote import RemoteRegistry
from nsmd.registry.view import RegistryView

SYNC_TIMEOUT_S = 5.0
log = logging.getLogger("nsmd.registry.foreign")


def qualify_service(ns: NetworkService, domain: str) -> NetworkService:
    return dataclasses.replace(ns, name=f"{ns.name}@{domain}")


def qualify_endpoint(nse: NetworkServiceEndpoint, domain: str) -> NetworkServiceEndpoint:
    return dataclasses.replace(
        nse, name=f"{nse.name}@{domain}",
        network_service_names=[f"{s}@{domain}" for s in nse.network_service_names],
        network_service_labels={f"{s}@{domain}": ServiceLabels(dict(v.labels))
                                for s, v in nse.network_service_labels.items()})


def localize_endpoint(nse: NetworkServiceEndpoint, domain: str) -> NetworkServiceEndpoint:
    """`x@E` offering `svc@E` as domain E's registry records it: `x` offering `svc`."""
    def local(name: str) -> str:
        base, dom = split(name)
        return base if dom == domain else name
    return dataclasses.replace(
        nse, name=local(nse.name),
        network_service_names=[local(s) for s in nse.network_service_names],
        network_service_labels={local(s): ServiceLabels(dict(v.labels))
                                for s, v in nse.network_service_labels.items()})


class DomainMirror(RemoteRegistry):
    """Another domain's registry, mirrored, each record copied into `into` qualified."""

    def __init__(self, peer: PeerClient, url: str, domain: str, into: RegistryView,
                 expect: str = ""):
        super().__init__(peer, url, expect)
        self.domain = domain
        self.into = into

    def _put_service(self, ns: NetworkService) -> None:
        super()._put_service(ns)
        self.into._put_service(qualify_service(ns, self.domain))

    def _drop_service(self, ns: NetworkService) -> None:
        super()._drop_service(ns)
        self.into._drop_service(qualify_service(ns, self.domain))

    def _put_endpoint(self, nse: NetworkServiceEndpoint) -> None:
        super()._put_endpoint(nse)
        self.into._put_endpoint(qualify_endpoint(nse, self.domain))

    def _drop_endpoint(self, nse: NetworkServiceEndpoint) -> None:
        super()._drop_endpoint(nse)
        self.into._drop_endpoint(qualify_endpoint(nse, self.domain))


class ForeignRegistries:
    def __init__(self, view: RegistryView, peer: PeerClient | None, domains: Domains):
        self.view = view
        self.peer = peer
        self.domains = domains
        self.mirrors: dict[str, DomainMirror] = {}
        self._starting: dict[str, asyncio.Task] = {}

    async def ensure(self, domain: str) -> DomainMirror:
        """Domain `domain`'s registry, mirrored into the view (started on first use)."""
        if domain in self.mirrors:
            return self.mirrors[domain]
        task = self._starting.get(domain)
        if task is None:
            task = self._starting[domain] = asyncio.ensure_future(self._start(domain))
        try:
            return await asyncio.shield(task)
        finally:
            if task.done():
                self._starting.pop(domain, None)

    async def _start(self, domain: str) -> DomainMirror:
        if self.peer is None:
            raise NotFound(f"domain {domain!r}: reaching other domains needs --listen and an "
                           "identity")
        url = await self.domains.registry_url(domain)
        mirror = DomainMirror(self.peer, url, domain, self.view,
                              self.domains.registry_id(domain))
        mirror.start_timeout_s = SYNC_TIMEOUT_S
        await mirror.start()
        if not mirror.synced:  # say why, and try again on the next request
            mirror.close()
            raise SelectionError(f"domain {domain}: its registry at {url} did not answer "
                                 f"({mirror.last_error or 'no reply'}); it must present an SVID "
                                 f"of {self.domains.registry_id(domain)}, and a registry of "
                                 "another trust domain needs --federate")
        self.mirrors[domain] = mirror
        log.info("domain %s: following its registry at %s", domain, url)
        return mirror

    def close(self) -> None:
        for mirror in self.mirrors.values():
            mirror.close()
        for task in self._starting.values():
            task.cancel()
