"""One nsmd: registry, manager, data plane and API wired together; start-up and shutdown.

Start-up order matters for "nothing lost on restart": re-attach the vWire devices of the
last run, re-register hosted endpoints, request held connections again along their old
paths, and only then remove devices that no connection claimed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import resource
import socket
import time

from aiohttp import web

from nsmd import netns
from nsmd.api.app import build_app, serve_peers, serve_unix
from nsmd.caller import DAEMON, Caller
from nsmd.clock import Clock, SystemClock
from nsmd.config import Config, listen_address
from nsmd.dataplane import Dataplane
from nsmd.errors import Conflict, NotFound, PermissionDenied
from nsmd.hosting import Hosting
from nsmd.identity.identity import Identity
from nsmd.identity.svid import verify_chain
from nsmd.identity.tls import peer_certificate
from nsmd.manager.build import Manager
from nsmd.manager.liveness import Liveness
from nsmd.manager.probe import timings
from nsmd.manager.rekey import Rekeyer
from nsmd.manifest import Resource, to_manifest
from nsmd.metrics import Metrics
from nsmd.model import NetworkService, NetworkServiceEndpoint
from nsmd.peer.client import PeerClient
from nsmd.peer.server import build_peer_app
from nsmd.policy import Policy
from nsmd.registry import Registry
from nsmd.registry.remote import RemoteRegistry
from nsmd.state import StateDB
from nsmd.systemd import Notifier

log = logging.getLogger("nsmd")
LOCK_FILE = "nsmd.lock"


class Daemon:
    def __init__(self, config: Config, clock: Clock | None = None):
        self.config = config
        self.clock = clock or SystemClock()
        self.url = config.url
        self.stopping = asyncio.Event()
        self.started_at = time.monotonic()
        self._lock_fd = -1
        self._runner: web.AppRunner | None = None
        self._peer_runner: web.AppRunner | None = None
        self.peer: PeerClient | None = None
        self.id: Identity | None = None
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        cfg = self.config
        _raise_fd_limit()
        self._take_lock()
        _refuse_live_socket(cfg.api_socket)
        policy = Policy.load(cfg.policy) if cfg.policy else Policy.allow_all()
        self.db = StateDB(cfg.state_dir)
        self.metrics = Metrics()
        if cfg.listen or cfg.registry:
            await self._load_identity()
        own_id = self.id.spiffe_id if self.id else ""
        if cfg.registry and self.peer:
            if not cfg.registry_id:
                log.warning("--registry-id not given: any daemon of trust domain %s is "
                            "accepted as the registry at %s", self.id and self.id.trust_domain,
                            cfg.registry)
            self.registry: Registry | RemoteRegistry = RemoteRegistry(
                self.peer, cfg.registry, cfg.registry_id)
        else:
            self.registry = Registry(self.db, self.clock, cfg.nse_expiry_s, own_id)
        self.dataplane = Dataplane(self.db, cfg.engines, cfg.local_queues)
        self.hosting = Hosting(self.db, self.registry, self.clock, self.url, cfg.name)
        self.manager = Manager(name=cfg.name, registry=self.registry, hosting=self.hosting,
                               dataplane=self.dataplane, db=self.db, clock=self.clock,
                               metrics=self.metrics, peer=lambda: self.peer,
                               identity=lambda: self.id, policy=policy,
                               token_lifetime_s=cfg.token_lifetime_s, local_mtu=cfg.local_mtu,
                               tunnel_mtu=cfg.tunnel_mtu, keepalive_s=cfg.keepalive_s,
                               heal_detect_s=cfg.heal_detect_s)
        self.metrics.add_live_source(lambda: len(self.manager.server_begin.peek()),
                                     self.dataplane.totals)
        self.dataplane.start()
        if cfg.listen:
            self.dataplane.open_udp(listen_address(cfg.listen)[0], cfg.tunnel_port)
        await self.registry.start()
        if isinstance(self.registry, RemoteRegistry):
            self.registry.on_resync.append(self.hosting.reregister_all)
        await self.dataplane.restore()
        await self.hosting.start()
        restored, healing, lost = await self.manager.restore()
        claimed = self.manager.wire_ids()
        swept = await self.dataplane.sweep(claimed)
        released = self.manager.ipam.sweep(claimed)
        if released:
            log.info("restart: released the addresses of %d connection(s) that did not "
                     "come back", len(released))
        if restored or healing or lost or swept:
            log.info("restart: %d connection(s) restored, %d being healed, %d lost, %d stale "
                     "vWire(s) removed", restored, healing, lost, len(swept))
        self.liveness = Liveness(self.manager, self.hosting, timings(cfg.heal_detect_s)[0])
        self.rekeyer = Rekeyer(self.manager, self.dataplane, self.metrics, cfg.rekey_after_s)
        self._tasks = [asyncio.ensure_future(self.liveness.run(self.stopping)),
                       asyncio.ensure_future(self.rekeyer.run(self.stopping)),
                       asyncio.ensure_future(self.manager.functions.run(self.stopping)),
                       asyncio.ensure_future(self.manager.supplies.run(self.stopping)),
                       asyncio.ensure_future(self.manager.netsvc.run(self.stopping))]
        self._runner = await serve_unix(build_app(self), cfg.api_socket, cfg.api_group)
        if cfg.listen:
            assert self.id is not None
            self._peer_runner = await serve_peers(build_peer_app(self), cfg.listen,
                                                  self.id.tls.listener)
        log.info("nsmd %s ready: api %s, state %s, %d service(s), %d endpoint(s)", cfg.name,
                 cfg.api_socket, cfg.state_dir, len(self.registry.services),
                 len(self.registry.endpoints))

    async def stop(self) -> None:
        """Stops serving; vWires and held connections stay for the next run."""
        self.stopping.set()
        for task in self._tasks:
            await task
        for runner in (self._runner, self._peer_runner):
            if runner is not None:
                await runner.cleanup()
        self._runner = self._peer_runner = None
        if self.peer is not None:
            await self.peer.close()
        if self.id is not None:
            self.id.close()
        if hasattr(self, "manager"):
            self.manager.shutdown()
            self.hosting.close()
            self.registry.close()
            await self.dataplane.shutdown()
            netns.stop_all()
            self.db.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
        log.info("nsmd %s stopped", self.config.name)

    # -- operations the API calls ----------------------------------------------------------

    def service(self, name: str) -> NetworkService:
        ns = self.registry.services.get(name)
        if ns is None:
            raise NotFound(f"network service {name!r} is not registered")
        return ns

    def endpoint_view(self, name: str) -> dict:
        nse = self.registry.endpoints.get(name)
        if nse is None:
            raise NotFound(f"network service endpoint {name!r} is not registered")
        return to_manifest(nse, self.hosting.spec(name))["spec"] | {"name": name}

    async def apply(self, resources: list[Resource], caller: Caller = DAEMON) -> list[dict]:
        for res in resources:  # all allowed, or nothing changes
            services = [res.name] if res.service is not None else (
                res.endpoint.network_service_names if res.endpoint else [])
            for service in services:
                self.manager.policy.check("register", service, caller)
        results = []
        for res in resources:
            if res.service is not None:
                existed = res.name in self.registry.services
                await self.registry.register_service(res.service)
            else:
                assert res.endpoint is not None and res.spec is not None
                existed = self.hosting.spec(res.name) is not None
                other = self.registry.endpoints.get(res.name)
                if other is not None and not existed and other.url != self.url:
                    raise Conflict(f"endpoint {res.name!r} is registered by another daemon "
                                   f"({other.url})")
                await self.hosting.apply(res.endpoint, res.spec)
            results.append({"kind": res.kind, "name": res.name,
                            "action": "configured" if existed else "created"})
            if res.spec is not None and not netns.exists(res.spec.netns):
                results[-1]["waiting_for_netns"] = res.spec.netns
            log.debug("applied %s %s (%s)", res.kind, res.name, results[-1]["action"])
            await asyncio.sleep(0)  # a big manifest must not keep the API waiting
        created = sum(r["action"] == "created" for r in results)
        log.info("applied %s: %d created, %d configured", ", ".join(
            f"{r['kind']} {r['name']}" for r in results[:3]) + (", ..." if len(results) > 3
                                                                else ""),
            created, len(results) - created)
        return results

    async def delete_endpoint(self, name: str, caller: Caller = DAEMON,
                              ) -> NetworkServiceEndpoint:
        nse = self.registry.endpoints.get(name)
        hosted = self.hosting.spec(name) is not None
        if nse is None and not hosted:
            raise NotFound(f"network service endpoint {name!r} is not registered")
        for service in nse.network_service_names if nse else []:
            self.manager.policy.check("register", service, caller)
        own_id = self.id.spiffe_id if self.id else ""
        if nse is not None and nse.path_ids and nse.path_ids[0] != own_id:
            # checked before anything is closed: a refused delete changes nothing
            raise PermissionDenied("registry_owner", f"network service endpoint {name!r} is "
                                   f"owned by {nse.path_ids[0]}, not this daemon")
        closed = await self.manager.close_endpoint_connections(name)
        self.hosting.remove(name)
        if nse is not None:
            await self.registry.unregister_endpoint(name)
        log.info("deleted endpoint %s (%d vWire(s) closed)", name, closed)
        return nse or NetworkServiceEndpoint(name=name)

    # -- internals -------------------------------------------------------------------------

    async def _load_identity(self) -> None:
        cfg = self.config
        self.id = Identity.from_config(cfg.identity_dir, cfg.spiffe_socket,
                                       cfg.token_lifetime_s)
        await self.id.start()
        self.id.on_change.append(self._identity_changed)
        self.peer = PeerClient(self.id.tls, self.url if cfg.listen else "")

    def _identity_changed(self, ca_removed: bool) -> None:
        """New handshakes use the new SVID and bundle already; when a CA left the bundle,
        connections it authenticated are closed too (peers reconnect under the new one)."""
        if not ca_removed:
            return
        assert self.id is not None and self.peer is not None
        self._tasks.append(asyncio.ensure_future(self.peer.close()))
        server = self._peer_runner.server if self._peer_runner else None
        for handler in server.connections if server else []:
            transport = handler.transport
            if transport is None:
                continue  # closing already
            try:
                verify_chain([peer_certificate(transport.get_extra_info("ssl_object"))],
                             self.id.svid.bundle)
            except Exception:  # untrusted now, or not verifiable: fail closed
                log.info("closing a peer connection its CA no longer vouches for")
                handler.force_close()

    def identity(self) -> dict | None:
        if self.id is None:
            return None
        leaf = self.id.svid.chain[0]
        return {"spiffe_id": self.id.spiffe_id, "serial": format(leaf.serial_number, "x"),
                "not_after": leaf.not_valid_after_utc.isoformat(),
                "bundle_cas": len(self.id.svid.bundle),
                "source": self.config.spiffe_socket or self.config.identity_dir}

    def _take_lock(self) -> None:
        os.makedirs(self.config.state_dir, mode=0o700, exist_ok=True)
        path = os.path.join(self.config.state_dir, LOCK_FILE)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise Conflict(f"state directory {self.config.state_dir} is in use by another "
                           f"nsmd (pid {owner})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd


def _raise_fd_limit() -> None:
    """Every vWire holds TUN fds: the default soft limit (1024) would cap us at ~500."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        log.debug("open file limit raised from %d to %d", soft, hard)


def _refuse_live_socket(path: str) -> None:
    if not os.path.exists(path):
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe, \
            contextlib.suppress(OSError):
        probe.connect(path)
        raise Conflict(f"another daemon is serving on {path}")


async def run(config: Config) -> None:
    """Runs a daemon until SIGTERM or SIGINT, telling systemd (Type=notify) when it is
    ready, that it lives (its watchdog), and when it stops."""
    import signal

    daemon = Daemon(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    systemd = Notifier()
    await daemon.start()
    systemd.ready(f"serving on {config.api_socket}" + (f" and {config.listen}"
                                                         if config.listen else ""))
    watchdog = asyncio.ensure_future(systemd.watchdog(
        daemon.clock, stop, lambda: daemon.dataplane.running))
    try:
        await stop.wait()
    finally:
        systemd.stopping()
        await watchdog
        await daemon.stop()
