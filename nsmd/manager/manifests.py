"""What the API's registry side asks of the manager: manifests applied, endpoints deleted,
services and endpoints looked up.

Every service a manifest names is checked against the policy ("register") before
anything is written, and an endpoint a local user other than root hosts must keep its
interfaces in named namespaces and supply nothing (local_namespaces): all of it is
allowed, or nothing changes. An endpoint's record may
be replaced only by the daemon hosting it; deleting an endpoint closes its vWires first
(their clients heal elsewhere).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from nsmd import netns
from nsmd.caller import DAEMON, Caller, check_local_netns
from nsmd.errors import Conflict, NotFound, PermissionDenied
from nsmd.hosting import Hosting
from nsmd.manifest import Resource, to_manifest
from nsmd.model import NetworkService, NetworkServiceEndpoint
from nsmd.model.endpoint_spec import EndpointSpec
from nsmd.policy import Policy
from nsmd.registry import RegistryView
from nsmd.vl3 import router

log = logging.getLogger("nsmd.manager.manifests")


class Manifests:
    def __init__(self, registry: RegistryView, hosting: Hosting, policy: Policy,
                 close_endpoint_connections: Callable[[str], Awaitable[int]],
                 own_id: Callable[[], str]):
        self.registry = registry
        self.hosting = hosting
        self.policy = policy
        self.close_endpoint_connections = close_endpoint_connections
        self.own_id = own_id

    def service(self, name: str) -> NetworkService:
        ns = self.registry.services.get(name)
        if ns is None:
            raise NotFound(f"network service {name!r} is not registered")
        return ns

    def endpoint_view(self, name: str) -> dict:
        """The endpoint's record, with the `nsmd` block of its spec if hosted here."""
        nse = self.registry.endpoints.get(name)
        if nse is None:
            raise NotFound(f"network service endpoint {name!r} is not registered")
        return to_manifest(nse, self.hosting.spec(name))["spec"] | {"name": name}

    async def apply(self, resources: list[Resource], caller: Caller = DAEMON,
                    dry_run: bool = False) -> list[dict]:
        """Registers every resource, or (a refusal, a dry run) none: each is checked
        against the policy, the caller's rights and ownership before anything is written."""
        results = [self._check(res, caller) for res in resources]
        if dry_run:
            log.info("dry run of %s: allowed, nothing changed", _summary(results))
            return [r | {"action": f"{r['action']} (dry run)"} for r in results]
        for res, result in zip(resources, results, strict=True):
            if res.service is not None:
                await self.registry.register_service(res.service)
            else:
                assert res.endpoint is not None and res.spec is not None
                await self.hosting.apply(res.endpoint, res.spec)
            log.debug("applied %s %s (%s)", res.kind, res.name, result["action"])
            await asyncio.sleep(0)  # a big manifest must not keep the API waiting
        created = sum(r["action"] == "created" for r in results)
        log.info("applied %s: %d created, %d configured", _summary(results), created,
                 len(results) - created)
        return results

    def _check(self, res: Resource, caller: Caller) -> dict:
        """What applying `res` would do, or the refusal (PermissionDenied, Conflict)."""
        services = [res.name] if res.service is not None else (
            res.endpoint.network_service_names if res.endpoint else [])
        for service in services:
            self.policy.check("register", service, caller)
        if res.service is not None:
            existed = res.name in self.registry.services
        else:
            assert res.spec is not None
            _check_local_endpoint(res.spec, caller)
            existed = self.hosting.spec(res.name) is not None
            other = self.registry.endpoints.get(res.name)
            if other is not None and not existed and other.url != self.hosting.url:
                raise Conflict(f"endpoint {res.name!r} is registered by another daemon "
                               f"({other.url})")
        result = {"kind": res.kind, "name": res.name,
                  "action": "configured" if existed else "created"}
        if res.spec is not None and res.spec.vl3 is None and not netns.exists(res.spec.netns):
            result["waiting_for_netns"] = res.spec.netns  # a vL3 router's is made for it
        return result

    async def delete_endpoint(self, name: str, caller: Caller = DAEMON,
                              ) -> NetworkServiceEndpoint:
        nse = self.registry.endpoints.get(name)
        hosted = self.hosting.spec(name) is not None
        if nse is None and not hosted:
            raise NotFound(f"network service endpoint {name!r} is not registered")
        for service in nse.network_service_names if nse else []:
            self.policy.check("register", service, caller)
        if nse is not None and nse.path_ids and nse.path_ids[0] != self.own_id():
            # checked before anything is closed: a refused delete changes nothing
            raise PermissionDenied("registry_owner", f"network service endpoint {name!r} is "
                                   f"owned by {nse.path_ids[0]}, not this daemon")
        spec = self.hosting.spec(name)
        closed = await self.close_endpoint_connections(name)
        if hosted and nse is not None:
            await self.hosting.unregister(name)
        elif nse is not None:
            await self.registry.unregister_endpoint(name)
        self.hosting.remove(name)
        if spec is not None and spec.vl3 is not None:
            await router.remove(spec.netns, name)
        log.info("deleted endpoint %s (%d vWire(s) closed)", name, closed)
        return nse or NetworkServiceEndpoint(name=name)


def _summary(results: list[dict]) -> str:
    named = ", ".join(f"{r['kind']} {r['name']}" for r in results[:3])
    return named + (", ..." if len(results) > 3 else "")


def _check_local_endpoint(spec: EndpointSpec, caller: Caller) -> None:
    """What a local user other than root may host: interfaces in named namespaces only
    (the vL3 router's too, if it names one), and no supplier (it creates namespaces)."""
    if caller.kind != "local" or caller.is_root:
        return
    if spec.supplier is not None:
        raise PermissionDenied("local_namespaces", f"{caller} may not host a supplier: "
                               "supplied endpoints create namespaces (root only)")
    if spec.vl3 is not None:
        if spec.netns:
            check_local_netns(caller, spec.netns, "a vL3 router")
    elif not spec.builds_no_device:
        check_local_netns(caller, spec.netns, "an endpoint's interfaces")
