"""Endpoints this daemon hosts: their `nsmd:` specs, and registrations kept fresh.

A hosted endpoint is registered with this daemon's URL and its node's `nodeName` label
(NSM's clientinfo), to be kept alive while the daemon lives and to expire within one
period after it dies. The daemon's own registry and an etcd lease keep it alive with no
refresh at all (100,000 endpoints cost nothing while they stay as they are); another
daemon's registry gets it again at 2/3 of its expiry period (NSM: sdk
registry/common/refresh). Specs are stored, so a restarted
daemon re-registers what it hosted before. Endpoints are registered only while their
namespace exists; namespaces are watched one by one, not endpoint by endpoint (many
endpoints may share one), so a check costs the same for ten endpoints or 100,000.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from nsmd import netns
from nsmd.clock import Clock
from nsmd.domains import split
from nsmd.errors import Conflict, DataplaneError, NsmdError
from nsmd.model import NetworkServiceEndpoint, ServiceLabels, from_wire, to_wire
from nsmd.model.codec import copy_model
from nsmd.model.endpoint_spec import EndpointSpec
from nsmd.registry import RegistryView
from nsmd.registry.foreign import ForeignRegistries, localize_endpoint
from nsmd.registry.remote import RemoteRegistry
from nsmd.registry.view import KEPT_ALIVE
from nsmd.state import StateDB
from nsmd.timers import TimerSet
from nsmd.vl3 import router, subnets

REREGISTER_AT = 2 / 3
RETRY_S = 1.0
MAX_SUBNET_TRIES = 64  # a vL3 endpoint's claims before it gives up for this round
YIELD_EVERY = 100  # bulk (un)registrations let the event loop serve the API this often
log = logging.getLogger("nsmd.hosting")


NODE_LABEL = "nodeName"  # NSM's clientinfo label: which node a client or endpoint is on


def with_node_label(nse: NetworkServiceEndpoint, node: str) -> NetworkServiceEndpoint:
    """`nse` labelled with the node hosting it for each of its services (NSM's clientinfo),
    unless the manifest says otherwise, so `{{.nodeName}}` selectors find it."""
    for service in nse.network_service_names:
        entry = nse.network_service_labels.setdefault(service, ServiceLabels())
        entry.labels.setdefault(NODE_LABEL, node)
    return nse


class Hosting:
    def __init__(self, db: StateDB, registry: RegistryView, clock: Clock, url: str,
                 node: str = ""):
        self.db = db
        self.registry = registry
        self.clock = clock
        self.url = url
        self.node = node
        self._hosted: dict[str, tuple[NetworkServiceEndpoint, EndpointSpec]] = {}
        self._in_netns: dict[str, set[str]] = defaultdict(set)  # namespace -> endpoints
        self._vl3: set[str] = set()  # the vL3 endpoints among them (checked twice a second)
        # namespace -> whether it existed at the last check, which acted on all its
        # endpoints; apply() registers a new one by what it finds, and a change since
        # that check is handled by the next one
        self._netns_seen: dict[str, bool] = {}
        self.timers = TimerSet(clock, self._refresh)
        # other domains' registries, for endpoints hosted as NAME@DOMAIN (set by the daemon)
        self.foreign: ForeignRegistries | None = None

    def spec(self, name: str) -> EndpointSpec | None:
        hosted = self._hosted.get(name)
        return hosted[1] if hosted else None

    def require(self, name: str) -> EndpointSpec:
        """The spec of an endpoint the request was routed to here; it must be ours."""
        spec = self.spec(name)
        if spec is None:
            raise DataplaneError(f"endpoint {name!r} is not hosted by this daemon")
        return spec

    def vl3_subnet(self, name: str) -> str:
        """The subnet a hosted vL3 endpoint holds ("" before its first registration)."""
        hosted = self._hosted.get(name)
        if hosted is None or not hosted[0].network_service_names:
            return ""
        return subnets.subnet_of(hosted[0], hosted[0].network_service_names[0])

    def names(self) -> list[str]:
        return list(self._hosted)

    def vl3_names(self) -> list[str]:
        return sorted(self._vl3)

    def __len__(self) -> int:
        return len(self._hosted)

    async def start(self) -> None:
        """Re-registers every endpoint hosted before a restart; one the registry cannot
        take yet is retried every second, the daemon starts regardless."""
        for name, doc in self.db.items("hosted"):
            nse = from_wire(NetworkServiceEndpoint, doc["endpoint"])
            nse.url = self.url  # the daemon may serve on another socket than before
            spec = from_wire(EndpointSpec, doc["spec"])
            if spec.vl3 is not None:
                await router.prepare(spec.netns)
            self._host(name, nse, spec)
            if netns.exists(spec.netns):
                await self._refresh(name)  # the registry may be down: keeps retrying
                await _pause(len(self._hosted))

    async def apply(self, nse: NetworkServiceEndpoint, spec: EndpointSpec,
                    ) -> NetworkServiceEndpoint:
        nse.url = self.url
        template = from_wire(NetworkServiceEndpoint, to_wire(nse))
        template.expiration_time = 0.0
        if self.node:
            with_node_label(template, self.node)
        if spec.vl3 is not None:
            spec.netns = spec.netns or router.default_netns(nse.name)
            await router.prepare(spec.netns)
            held = self.vl3_subnet(nse.name)
            if subnets.fits(held, spec.vl3.prefix, spec.vl3.subnet_prefix_len):
                _label_subnet(template, held)  # a re-apply keeps the subnet and addresses
        self.db.put("hosted", nse.name, {"endpoint": to_wire(template), "spec": to_wire(spec)})
        self._unhost(nse.name)
        self._host(nse.name, template, spec)
        if not netns.exists(spec.netns):
            log.warning("endpoint %s: namespace %r does not exist yet; it is registered once "
                        "the namespace appears", nse.name, spec.netns)
            return template
        return await self._register(nse.name)

    def remove(self, name: str) -> bool:
        self.timers.disarm(name)
        if not self._unhost(name):
            return False
        self.db.delete("hosted", name)
        return True

    def reregister_all(self) -> None:
        """Registers every hosted endpoint again now (the registry came back empty-handed
        after a break: NSM's registry heal)."""
        now = self.clock.time()
        for ns, names in self._in_netns.items():
            if netns.exists(ns):
                for name in names:
                    self.timers.arm(name, now)

    async def check_namespaces(self) -> None:
        """Withdraws endpoints whose namespace vanished; brings them back when it returns.

        A registration that points at a dead workload would only make clients fail over.
        """
        done = 0
        for ns, names in list(self._in_netns.items()):
            alive = netns.exists(ns)
            if self._netns_seen.get(ns) == alive:
                continue
            self._netns_seen[ns] = alive
            changed = 0
            for name in list(names):
                registered = name in self.registry.endpoints
                if registered and not alive:
                    await self.unregister(name)
                    changed += 1
                elif alive and not registered:
                    await self._register(name)
                    changed += 1
                done += 1
                await _pause(done)
            if changed:
                log.info("namespace %r %s: %d endpoint(s) %s", ns, "is back" if alive else
                         "is gone", changed, "registered" if alive else "unregistered")

    async def unregister(self, name: str) -> NetworkServiceEndpoint:
        """Withdraws a hosted endpoint's registration (from its domain's registry)."""
        self.timers.disarm(name)
        if foreign := await self._foreign_registry(name):
            return await foreign[0].unregister_endpoint(split(name)[0])
        return await self.registry.unregister_endpoint(name)

    async def _foreign_registry(self, name: str) -> tuple[RemoteRegistry, str] | None:
        """(the registry of NAME@DOMAIN's domain, DOMAIN) when it is another domain's."""
        domain = self.foreign.domains.foreign(name) if self.foreign else ""
        if not domain or self.foreign is None:
            return None
        return await self.foreign.ensure(domain), domain

    def close(self) -> None:
        self.timers.stop()

    def _host(self, name: str, nse: NetworkServiceEndpoint, spec: EndpointSpec) -> None:
        self._hosted[name] = (nse, spec)
        self._in_netns[spec.netns].add(name)
        if spec.vl3 is not None:
            self._vl3.add(name)

    def _unhost(self, name: str) -> bool:
        hosted = self._hosted.pop(name, None)
        if hosted is None:
            return False
        self._vl3.discard(name)
        names = self._in_netns.get(hosted[1].netns)
        if names is not None:
            names.discard(name)
            if not names:
                del self._in_netns[hosted[1].netns]
                self._netns_seen.pop(hosted[1].netns, None)
        return True

    async def _register(self, name: str) -> NetworkServiceEndpoint:
        template, spec = self._hosted[name]
        now = self.clock.time()
        if foreign := await self._foreign_registry(name):  # NAME@DOMAIN: there, pointing here
            mirror, domain = foreign
            registered = await mirror.register_endpoint(localize_endpoint(copy_model(template),
                                                                          domain))
        elif spec.vl3 is not None:
            registered = await self._claim_subnet(name, template, spec)
        else:
            registered = await self.registry.register_endpoint(copy_model(template), keep=True)
        if registered.expiration_time < KEPT_ALIVE:  # a remote registry: refresh it
            self.timers.arm(name, now + (registered.expiration_time - now) * REREGISTER_AT)
        return registered

    async def _claim_subnet(self, name: str, template: NetworkServiceEndpoint,
                            spec: EndpointSpec) -> NetworkServiceEndpoint:
        """Registers a vL3 endpoint with the subnet it held (or the first free one): the
        registry refuses a subnet another endpoint holds, so it tries the next."""
        assert spec.vl3 is not None
        service = template.network_service_names[0]
        held = subnets.subnet_of(template, service)
        taken = [subnets.subnet_of(nse, service) for nse in self.registry.endpoints_of(service)
                 if nse.name != name]
        tries = subnets.candidates(spec.vl3.prefix, spec.vl3.subnet_prefix_len,
                                   [t for t in taken if t], held)
        for _, subnet in zip(range(MAX_SUBNET_TRIES), tries, strict=False):
            _label_subnet(template, subnet)
            try:
                registered = await self.registry.register_endpoint(copy_model(template),
                                                                   keep=True)
            except Conflict as err:
                log.info("endpoint %s: %s; trying another subnet", name, err)
                continue
            if subnet != held:
                if held:
                    log.warning("vL3 endpoint %s moved from subnet %s to %s (another endpoint "
                                "took it while this one was away)", name, held, subnet)
                self.db.put("hosted", name, {"endpoint": to_wire(template),
                                             "spec": to_wire(spec)})
                log.info("vL3 endpoint %s holds subnet %s of %s", name, subnet, spec.vl3.prefix)
            return registered
        _label_subnet(template, held)
        raise Conflict(f"vL3 endpoint {name}: no free /{spec.vl3.subnet_prefix_len} subnet "
                       f"of {spec.vl3.prefix} (every one tried is held by another endpoint)")

    async def _refresh(self, name: str) -> None:
        if name not in self._hosted:
            return
        try:
            await self._register(name)
        except NsmdError as err:  # keep trying: a registration that lapses loses clients
            log.error("re-registering endpoint %s failed: %s; retrying in 1 s", name, err)
            self.timers.arm(name, self.clock.time() + RETRY_S)


def _label_subnet(nse: NetworkServiceEndpoint, subnet: str) -> None:
    for service in nse.network_service_names:
        labels = nse.network_service_labels.setdefault(service, ServiceLabels()).labels
        if subnet:
            labels[subnets.SUBNET_LABEL] = subnet
        else:
            labels.pop(subnets.SUBNET_LABEL, None)


async def _pause(done: int) -> None:
    """Every YIELD_EVERY steps of a bulk loop, lets the event loop run other work."""
    if done % YIELD_EVERY == 0:
        await asyncio.sleep(0)
