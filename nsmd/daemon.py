"""One nsmd: registry, manager, data plane and API wired together; start-up and shutdown.

Wiring and lifecycle only: what the daemon does lives in the manager (nsmd/manager), the
registry (nsmd/registry), the data plane and the API handlers. Start-up takes the state
directory's lock, loads the identity, builds the parts, lets the manager recover what the
last run left (Manager.recover), then serves. Shutdown stops serving and leaves every
vWire up for the next run.
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

from nsmd import logs, netns
from nsmd.api.app import build_app, drop_untrusted_peers, serve_metrics, serve_peers, serve_unix
from nsmd.api.peer import build_peer_app, serve_sealed
from nsmd.clock import Clock, SystemClock, every
from nsmd.config import Config
from nsmd.dataplane import Dataplane
from nsmd.domains import Domains, load_table
from nsmd.errors import Conflict, NsmdError, one_line
from nsmd.heaptrim import HeapTrimmer
from nsmd.hosting import Hosting
from nsmd.identity.identity import Identity
from nsmd.manager.build import Manager
from nsmd.metrics import Metrics
from nsmd.peer.client import PeerClient
from nsmd.peer.envelope import Opener
from nsmd.peer.rendezvous import Hub, Rendezvous
from nsmd.plugins.api import FunctionHost
from nsmd.policy import Policy
from nsmd.quotas import Quotas
from nsmd.registry import Registry
from nsmd.registry.etcd import EtcdRegistry, EtcdTls
from nsmd.registry.foreign import ForeignRegistries
from nsmd.registry.remote import RemoteRegistry
from nsmd.relay import Relay
from nsmd.state import StateDB
from nsmd.systemd import Notifier
from nsmd.vl3.dns import upstream_servers

log = logging.getLogger("nsmd")
LOCK_FILE = "nsmd.lock"
EXPIRY_CHECK_S = 60.0


class Daemon:
    def __init__(self, config: Config, clock: Clock | None = None):
        self.config = config
        self.clock = clock or SystemClock()
        self.url = config.url
        self.stopping = asyncio.Event()
        self.started_at = time.monotonic()
        self._lock_fd = -1
        self._exit = contextlib.AsyncExitStack()   # start() fills it, stop() empties it
        self._peer_runner: web.AppRunner | None = None  # for dropping untrusted peers
        self.peer: PeerClient | None = None
        self.hub: Hub | None = None   # the rendezvous, on a daemon holding the registry
        self.relay: Relay | None = None   # --relay
        self.id: Identity | None = None
        self._tasks: list[asyncio.Task] = []
        self.heap = HeapTrimmer()  # the API touches it; it trims when work stops

    async def start(self) -> None:
        """Starts every part in order. What each takes is given back by stop(), in the
        reverse order, or at once if starting fails half-way (one exit stack pairs them)."""
        self._exit = contextlib.AsyncExitStack()
        try:
            await self._start(self._exit)
        except BaseException:
            await self._exit.aclose()
            raise

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        cfg = self.config
        _raise_fd_limit()
        self._take_lock()
        stack.callback(self._release_lock)
        _refuse_live_socket(cfg.api_socket)
        self.policy = policy = Policy.load(cfg.policy) if cfg.policy else Policy.allow_all()
        self.db = StateDB(cfg.state_dir)
        stack.callback(self.db.close)
        stack.callback(netns.stop_all)
        self.metrics = Metrics()
        self.quotas = Quotas(cfg.limits, self.metrics.quota_refusals)
        if cfg.listen or cfg.registry.startswith("https://") or \
                (cfg.registry_ca and not cfg.registry_cert):  # etcd with our SVID
            await self._load_identity(stack)
        own_id = self.id.spiffe_id if self.id else ""
        policy.home = self.id.trust_domain if self.id else ""
        self.registry = self._registry(own_id)
        stack.callback(self.registry.close)
        upstream = upstream_servers(cfg.upstream)
        own_domain = cfg.domain or (self.id.trust_domain if self.id else "")
        self.foreign = ForeignRegistries(self.registry, self.peer, Domains(
            own_domain, load_table(cfg.domains), upstream))
        stack.callback(self.foreign.close)
        self.dataplane = Dataplane(self.db, cfg.engines, cfg.local_queues,
                                   cfg.tunnel_aeads, cfg.advertised_ip)
        stack.push_async_callback(self.dataplane.shutdown)
        self.hosting = Hosting(self.db, self.registry, self.clock, self.url, cfg.name)
        stack.callback(self.hosting.close)
        self.hosting.foreign = self.foreign
        self.manager = Manager(name=cfg.name, registry=self.registry, hosting=self.hosting,
                               dataplane=self.dataplane, db=self.db, clock=self.clock,
                               metrics=self.metrics, peer=lambda: self.peer,
                               identity=lambda: self.id, policy=policy,
                               token_lifetime_s=cfg.token_lifetime_s, local_mtu=cfg.local_mtu,
                               tunnel_mtu=cfg.tunnel_mtu, keepalive_s=cfg.keepalive_s,
                               heal_detect_s=cfg.heal_detect_s,
                               rekey_after_s=cfg.rekey_after_s,
                               dns_upstream=upstream if cfg.vl3_dns_forward else [],
                               foreign=self.foreign,
                               registry_only=cfg.registry_only,
                               function_host=FunctionHost(cfg.state_dir,
                                                          cfg.capture_max_bytes),
                               quotas=self.quotas)
        stack.callback(self.manager.shutdown)
        self.metrics.add_live_source(lambda: len(self.manager.server_begin),
                                     self.dataplane.totals)
        self.metrics.add_mesh_source(self.manager.served_per_service, self.dataplane.peers,
                                     self.manager.heal.counts)
        if self.id is not None:
            self.metrics.add_identity_source(self.id.expiries)
        if not cfg.registry_only:  # a floating registry runs no data plane
            self.dataplane.start()
            if cfg.listen_at is not None:
                self.dataplane.open_udp(cfg.listen_at[0], cfg.tunnel_port)
        await self.registry.start()
        if isinstance(self.registry, RemoteRegistry | EtcdRegistry):
            self.registry.on_resync.append(self.hosting.reregister_all)
        await self.manager.recover()
        self._tasks = [asyncio.ensure_future(self.manager.run(self.stopping)),
                       asyncio.ensure_future(self.heap.run(self.stopping))]
        if self.id is not None:
            self._tasks.append(asyncio.ensure_future(self._watch_expiry(self.id)))
        stack.push_async_callback(self._end_tasks)
        runner = await serve_unix(build_app(self), cfg.api_socket, cfg.api_group)
        stack.push_async_callback(runner.cleanup)
        if cfg.metrics_at is not None:
            metrics_runner = await serve_metrics(self.metrics, *cfg.metrics_at)
            stack.push_async_callback(metrics_runner.cleanup)
        if cfg.listen:
            assert self.id is not None
            self._peer_runner = await serve_peers(build_peer_app(self), cfg.listen,
                                                  self.id.tls.listener)
            stack.push_async_callback(self._peer_runner.cleanup)
            self._start_rendezvous()
            if cfg.relay and cfg.listen_at is not None:
                host = cfg.listen_at[0]
                self.relay = Relay(self.dataplane, self.registry, self.clock, policy,
                                   self.quotas, host, cfg.advertised_ip or host, self.url,
                                   cfg.name)
                self._tasks.append(asyncio.ensure_future(self.relay.run(self.stopping)))
            self.manager.announce_restart()
        log.info("nsmd %s ready: api %s, state %s, %d service(s), %d endpoint(s)", cfg.name,
                 cfg.api_socket, cfg.state_dir, len(self.registry.services),
                 len(self.registry.endpoints))

    def _start_rendezvous(self) -> None:
        """Peer calls to daemons we cannot reach go through the registry daemon's
        rendezvous (and calls for us come through our channel there); a daemon holding
        the registry is that rendezvous."""
        assert self.id is not None and self.peer is not None
        cfg, remote = self.config, isinstance(self.registry, RemoteRegistry)
        if not remote and not isinstance(self.registry, EtcdRegistry):
            self.hub = Hub()
        identity = self.id
        rendezvous = Rendezvous(
            self.peer, identity.signer, Opener(identity.trust_chain, lambda: identity.spiffe_id),
            lambda opened, address: serve_sealed(self, opened, address), self.clock,
            registry_url=cfg.registry if remote else "", registry_id=cfg.registry_id,
            hub=self.hub, own_address=cfg.advertised_ip or (cfg.listen_at or ("",))[0])
        self.peer.rendezvous = rendezvous
        self._tasks.append(asyncio.ensure_future(rendezvous.run(self.stopping)))

    def reload_policy(self) -> None:
        """SIGHUP: the --policy file again. What does not parse is logged and changes
        nothing; connections already made stay (the policy decides new requests)."""
        path = self.config.policy
        if not path:
            log.info("SIGHUP: no --policy file to reload (the built-in policies apply)")
            return
        try:
            fresh = Policy.load(path)
        except NsmdError as err:
            log.error("SIGHUP: policy %s not reloaded, the one in force stays: %s", path,
                      one_line(str(err)))
            return
        self.policy.adopt(fresh)
        log.info("SIGHUP: policy %s reloaded (%d service rule(s))", path, len(fresh.rules))

    def _registry(self, own_id: str) -> Registry | RemoteRegistry | EtcdRegistry:
        """Our own SQLite registry, another daemon's, or an etcd cluster's."""
        cfg = self.config
        if cfg.registry.startswith("etcd://"):
            tls = None
            if cfg.registry_cert:
                tls = EtcdTls.files(cfg.registry_ca, cfg.registry_cert, cfg.registry_key)
            elif cfg.registry_ca and self.id is not None:
                svid_pem = self.id.svid_pem
                tls = EtcdTls(cfg.registry_ca, svid_pem, from_svid=True)
            return EtcdRegistry(cfg.registry, self.clock, cfg.nse_expiry_s, own_id, tls)
        if cfg.registry and self.peer:
            if not cfg.registry_id:
                log.warning("--registry-id not given: any daemon of trust domain %s is "
                            "accepted as the registry at %s", self.id and self.id.trust_domain,
                            cfg.registry)
            return RemoteRegistry(self.peer, cfg.registry, cfg.registry_id, self.clock)
        return Registry(self.db, self.clock, cfg.nse_expiry_s, own_id)

    async def stop(self) -> None:
        """Stops serving; vWires and held connections stay for the next run."""
        self.stopping.set()   # first: streams and loops end rather than wait
        await self._exit.aclose()
        self._peer_runner = None
        log.info("nsmd %s stopped", self.config.name)

    async def _watch_expiry(self, identity: Identity) -> None:
        """Logs, once per SVID, when renewal is due (nsmd_svid_expiry_timestamp_seconds
        says it to a scraper all the time)."""
        def check() -> None:
            warning = identity.expiry_warning(self.clock.time())
            if warning:
                log.warning("%s", warning)

        check()
        async for _ in every(self.clock, EXPIRY_CHECK_S, self.stopping):
            check()

    async def _end_tasks(self) -> None:
        self.stopping.set()
        for task in self._tasks:
            await task

    # -- internals -------------------------------------------------------------------------

    async def _load_identity(self, stack: contextlib.AsyncExitStack) -> None:
        cfg = self.config
        self.id = Identity.from_config(cfg.identity_dir, cfg.spiffe_socket,
                                       cfg.token_lifetime_s, cfg.federate)
        await self.id.start()
        stack.callback(self.id.close)
        self.id.on_change.append(self._identity_changed)
        self.peer = PeerClient(self.id.tls, self.url if cfg.listen else "")
        stack.push_async_callback(self.peer.close)

    def _identity_changed(self, ca_removed: bool) -> None:
        """New handshakes use the new SVID and bundle already; when a CA left the bundle,
        connections it authenticated are closed too (peers reconnect under the new one).
        etcd, if it knows us by our SVID, gets a channel with the new one."""
        registry = getattr(self, "registry", None)
        if isinstance(registry, EtcdRegistry) and registry.tls and registry.tls.from_svid:
            registry.reconnect()
        if not ca_removed:
            return
        assert self.id is not None and self.peer is not None
        self._tasks.append(asyncio.ensure_future(self.peer.close()))
        if self._peer_runner is not None:
            # federated domains' CAs stay trusted: only our own bundle changed
            drop_untrusted_peers(self._peer_runner, self.id.svid.bundle + tuple(
                c for bundle in self.id.tls.federated.values() for c in bundle))

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

    def _release_lock(self) -> None:
        os.close(self._lock_fd)
        self._lock_fd = -1


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
    loop.add_signal_handler(signal.SIGHUP, daemon.reload_policy)
    loop.add_signal_handler(signal.SIGUSR1, logs.toggle_debug)
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
