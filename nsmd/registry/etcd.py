"""A registry kept in etcd and shared by every daemon pointed at the same cluster.

`--registry etcd://HOST:PORT[,HOST:PORT...]`. Records are JSON under /nsmd/services/NAME
and /nsmd/endpoints/NAME. Reads (discovery, Find, local watches) are served from a mirror
in memory, like a remote daemon's registry: a snapshot at one revision, then a watch from
the next one, resumed from the last revision seen when the stream breaks (an etcd
restart); if etcd compacted past it, a new snapshot replaces the mirror. Writes are
transactions: a record is written only if it is still what was read (create-if-absent
for a new name), so the owner check (path_ids[0], the zero-trust rules) cannot race
another daemon. Endpoints live on one lease per daemon: keeping them alive costs one
keepalive every third of the expiry period, not a write per endpoint; a daemon that dies
loses its endpoints when the lease runs out. A vL3 subnet is claimed by a key of its own
(/nsmd/vl3/SERVICE/SUBNET -> endpoint) in the same transaction, so two endpoints cannot
take it at once. The etcd v3 gRPC API is used through generated stubs (aetcd.rpc) on a
grpc.aio channel of our own, which may be mutual TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from aetcd import rpc

from nsmd import defaults
from nsmd.clock import Clock, backoff
from nsmd.config import etcd_members
from nsmd.errors import Conflict, NotFound, NsmdError, ValidationError
from nsmd.model import NetworkService, NetworkServiceEndpoint, from_wire, to_wire
from nsmd.registry.view import KEPT_ALIVE, RegistryView, check_owner
from nsmd.vl3 import subnets

PREFIX = b"/nsmd/"
SERVICES = PREFIX + b"services/"
ENDPOINTS = PREFIX + b"endpoints/"
CLAIMS = PREFIX + b"vl3/"
TXN_TRIES = 8
CALL_TIMEOUT_S = 5.0
START_TIMEOUT_S = 10.0
FIRST_RETRY_S = 0.2
MAX_RETRY_S = 5.0
# gRPC's own reconnect backoff grows to 120 s by default, and a call made between two
# attempts fails at once. Here the backoff stays under 1 s, calls wait for the channel
# (wait_for_ready) and the watch and lease keepalive retry as soon as it reconnects: after
# an etcd restart everything goes on within a second.
CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 200),
                   ("grpc.min_reconnect_backoff_ms", 200),
                   ("grpc.max_reconnect_backoff_ms", 1000)]
log = logging.getLogger("nsmd.registry.etcd")


class RegistryUnavailable(NsmdError):
    status = 503


@dataclasses.dataclass(frozen=True)
class EtcdTls:
    """Mutual TLS to etcd: the CA of its server certificates (a file), and our client
    certificate chain and key as PEM, read when a channel is made: from files, or the
    daemon's current SVID (etcd then trusts our trust domain's CA for clients)."""
    ca: str
    client: Callable[[], tuple[bytes, bytes]]   # -> (certificate chain, key)
    from_svid: bool = False

    @classmethod
    def files(cls, ca: str, cert: str, key: str) -> EtcdTls:
        def read() -> tuple[bytes, bytes]:
            with open(cert, "rb") as c, open(key, "rb") as k:
                return c.read(), k.read()
        return cls(ca, read)


def grpc_target(members: list[tuple[str, int]]) -> str:
    """One gRPC target for the cluster: every member when they are IP literals (gRPC
    fails over between them), else the first name through DNS."""
    try:
        versions = {ipaddress.ip_address(h).version for h, _ in members}
    except ValueError:
        return f"dns:///{members[0][0]}:{members[0][1]}"
    if versions == {4}:
        return "ipv4:" + ",".join(f"{h}:{p}" for h, p in members)
    if versions == {6}:
        return "ipv6:" + ",".join(f"[{h}]:{p}" for h, p in members)
    return f"{members[0][0]}:{members[0][1]}"


def _range_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])


def _compare_absent(key: bytes) -> Any:
    return rpc.Compare(result=rpc.Compare.EQUAL, target=rpc.Compare.CREATE, key=key,
                       create_revision=0)


def _compare_unchanged(key: bytes, mod_revision: int) -> Any:
    return rpc.Compare(result=rpc.Compare.EQUAL, target=rpc.Compare.MOD, key=key,
                       mod_revision=mod_revision)


def _put(key: bytes, value: bytes, lease: int = 0) -> Any:
    return rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value, lease=lease))


def _delete(key: bytes) -> Any:
    return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))


def _claim_key(service: str, subnet: str) -> bytes:
    return CLAIMS + f"{service}/{subnet}".encode()


class EtcdRegistry(RegistryView):
    def __init__(self, url: str, clock: Clock, nse_expiry_s: float = defaults.NSE_EXPIRY_S,
                 self_id: str = "", tls: EtcdTls | None = None,
                 start_timeout_s: float = START_TIMEOUT_S):
        super().__init__()
        self.members = etcd_members(url)
        self.url = url
        self.clock = clock
        self.ttl = max(2, int(nse_expiry_s))
        self.self_id = self_id
        self.tls = tls
        self.start_timeout_s = start_timeout_s
        self.on_resync: list[Callable[[], object]] = []
        self.lease = 0
        self.revision = 0          # the last revision the mirror reflects
        self._mine: dict[str, bytes] = {}  # endpoints this daemon put on its lease
        self._channel: grpc.aio.Channel | None = None
        self._kv: Any = None
        self._leases: Any = None
        self._watch: Any = None
        self._tasks: list[asyncio.Task] = []
        self._synced = asyncio.Event()
        self._leased = asyncio.Event()
        self._failure = ""         # why the watch or keepalive last failed, until they work

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Connects, takes a lease, loads the snapshot and follows changes; returns once
        the mirror is loaded (or after a while, logging that etcd is not reachable)."""
        if self.tls is None:
            log.warning("registry %s: plaintext etcd (no --registry-ca/-cert/-key): fine on "
                        "loopback or a private test network, not across hosts", self.url)
        self._connect()
        self._tasks = [asyncio.ensure_future(self._follow()),
                       asyncio.ensure_future(self._keep_lease())]
        try:
            await asyncio.wait_for(asyncio.gather(self._synced.wait(), self._leased.wait()),
                                   self.start_timeout_s)
        except TimeoutError:
            log.error("registry %s not reachable yet; discovery sees no endpoints until it is",
                      self.url)

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._channel is not None:
            asyncio.ensure_future(self._channel.close())

    def reconnect(self) -> None:
        """A new channel (our SVID rotated): calls and streams in flight fail over to it."""
        old = self._channel
        self._connect()
        if old is not None:
            asyncio.ensure_future(old.close())

    def _connect(self) -> None:
        target = grpc_target(self.members)
        if self.tls is None:
            self._channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        else:
            with open(self.tls.ca, "rb") as ca:
                roots = ca.read()
            chain, key = self.tls.client()
            self._channel = grpc.aio.secure_channel(
                target, grpc.ssl_channel_credentials(roots, key, chain),
                options=CHANNEL_OPTIONS)
        self._kv = rpc.KVStub(self._channel)
        self._leases = rpc.LeaseStub(self._channel)
        self._watch = rpc.WatchStub(self._channel)

    # -- writes ----------------------------------------------------------------------------

    async def register_service(self, ns: NetworkService, owner: str | None = None,
                               ) -> NetworkService:
        ns.validate()
        key = SERVICES + ns.name.encode()
        for _ in range(TXN_TRIES):
            current = await self._get(key)
            old = from_wire(NetworkService, json.loads(current.value)) if current else None
            ns.path_ids = check_owner(old.path_ids if old else None, owner,
                                      f"network service {ns.name!r}", self.self_id)
            guard = _compare_unchanged(key, current.mod_revision) if current else \
                _compare_absent(key)
            if await self._txn([guard], [_put(key, _encode(ns))]):
                mirrored = from_wire(NetworkService, json.loads(_encode(ns)))
                if self.services.get(ns.name) != mirrored:
                    self._put_service(mirrored)
                return ns
        raise Conflict(f"network service {ns.name!r} kept changing under us; try again")

    async def unregister_service(self, name: str, owner: str | None = None) -> NetworkService:
        key = SERVICES + name.encode()
        for _ in range(TXN_TRIES):
            current = await self._get(key)
            if current is None:
                raise NotFound(f"network service {name!r} is not registered")
            ns = from_wire(NetworkService, json.loads(current.value))
            check_owner(ns.path_ids, owner, f"network service {name!r}", self.self_id)
            if await self._txn([_compare_unchanged(key, current.mod_revision)], [_delete(key)]):
                self._drop_service(ns)
                return ns
        raise Conflict(f"network service {name!r} kept changing under us; try again")

    async def register_endpoint(self, nse: NetworkServiceEndpoint, owner: str | None = None,
                                keep: bool = False) -> NetworkServiceEndpoint:
        """Creates or updates `nse` on this daemon's lease, which keeps it alive: `keep`
        (hosted endpoints) gets KEPT_ALIVE back and needs no refresh. A re-registration
        that changes nothing is not written."""
        nse.validate()
        now = self.clock.time()
        if nse.expiration_time and nse.expiration_time <= now:
            raise ValidationError("expiration_time", "a time in the future", nse.expiration_time)
        key = ENDPOINTS + nse.name.encode()
        subnets.check_claims(nse, self.endpoints_of)
        for _ in range(TXN_TRIES):
            if not self.lease:
                raise RegistryUnavailable(f"registry {self.url}: no etcd lease yet")
            current = await self._get(key)
            old = _decode_endpoint(current.value) if current else None
            nse.path_ids = check_owner(old.path_ids if old else None, owner,
                                       f"network service endpoint {nse.name!r}", self.self_id)
            nse.initial_registration_time = (old.initial_registration_time if old else
                                             nse.initial_registration_time or now)
            value = _encode(dataclasses.replace(nse, expiration_time=0.0))
            expires = KEPT_ALIVE if keep else now + self.ttl
            if current is not None and current.value == value and current.lease == self.lease:
                nse.expiration_time = expires
                return nse  # unchanged: the lease keeps it
            compares = [_compare_unchanged(key, current.mod_revision) if current else
                        _compare_absent(key)]
            ops = [_put(key, value, self.lease)]
            await self._claims(nse, old, compares, ops)
            if await self._txn(compares, ops):
                self._mine[nse.name] = value
                self._mirror_endpoint(_decode_endpoint(value))  # as the watch will see it
                nse.expiration_time = expires
                return nse
            # lost a race: read again (a subnet taken meanwhile is a Conflict then)
        raise Conflict(f"endpoint {nse.name!r} kept changing under us; try again")

    async def unregister_endpoint(self, name: str, owner: str | None = None,
                                  ) -> NetworkServiceEndpoint:
        key = ENDPOINTS + name.encode()
        for _ in range(TXN_TRIES):
            current = await self._get(key)
            if current is None:
                raise NotFound(f"network service endpoint {name!r} is not registered")
            nse = _decode_endpoint(current.value)
            check_owner(nse.path_ids, owner, f"network service endpoint {name!r}",
                        self.self_id)
            ops = [_delete(key)] + [_delete(_claim_key(s, sub)) for s, sub in _subnets(nse)]
            if await self._txn([_compare_unchanged(key, current.mod_revision)], ops):
                self._mine.pop(name, None)
                self._drop_endpoint(nse)
                return nse
        raise Conflict(f"endpoint {name!r} kept changing under us; try again")

    async def _claims(self, nse: NetworkServiceEndpoint, old: NetworkServiceEndpoint | None,
                      compares: list, ops: list) -> None:
        """Adds the vL3 subnet claims of `nse` to a transaction, and drops the ones its old
        record had; a subnet another endpoint holds is a Conflict."""
        wanted = {_claim_key(s, sub): sub for s, sub in _subnets(nse)}
        for key in (_claim_key(s, sub) for s, sub in _subnets(old) if old):
            if key not in wanted:
                ops.append(_delete(key))
        for key, subnet in wanted.items():
            held = await self._get(key)
            if held is None:
                compares.append(_compare_absent(key))
            elif held.value.decode() != nse.name:
                raise Conflict(f"vL3 subnet {subnet} is held by endpoint "
                               f"{held.value.decode()!r}")
            else:
                compares.append(_compare_unchanged(key, held.mod_revision))
            ops.append(_put(key, nse.name.encode(), self.lease))

    # -- etcd calls ------------------------------------------------------------------------

    async def _get(self, key: bytes) -> Any:
        reply = await self._call(self._kv.Range, rpc.RangeRequest(key=key))
        return reply.kvs[0] if reply.kvs else None

    async def _txn(self, compares: list, ops: list) -> bool:
        reply = await self._call(self._kv.Txn, rpc.TxnRequest(compare=compares, success=ops))
        return bool(reply.succeeded)

    async def _call(self, method, request) -> Any:
        """One unary call; while etcd is briefly away (a restart) it waits for the channel
        to reconnect, up to its deadline, instead of failing at once."""
        try:
            return await method(request, timeout=CALL_TIMEOUT_S, wait_for_ready=True)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:  # waiting said nothing
                why = f"last error: {self._failure}" if self._failure else \
                    "is etcd up and reachable?"
                raise RegistryUnavailable(f"registry {self.url}: no answer within "
                                          f"{CALL_TIMEOUT_S:g} s ({why})") from None
            raise RegistryUnavailable(f"registry {self.url}: {err.code().name}: "
                                      f"{err.details()}") from None

    def _failed(self, err: Exception) -> str:
        self._failure = _reason(err)
        return self._failure

    async def _retry_after(self, pause: float) -> None:
        """Waits `pause` seconds before a stream is opened again, or less: until the
        channel has (re)connected, but at least FIRST_RETRY_S."""
        await asyncio.sleep(FIRST_RETRY_S)
        channel = self._channel
        if channel is not None and pause > FIRST_RETRY_S:
            # a timeout, or a channel closed meanwhile (reconnect()): retry either way
            with contextlib.suppress(Exception):
                await asyncio.wait_for(channel.channel_ready(), pause - FIRST_RETRY_S)

    # -- the lease -------------------------------------------------------------------------

    async def _keep_lease(self) -> None:
        """Takes this daemon's lease and keeps it alive; if etcd lost it (the daemon was
        cut off longer than its TTL), takes a new one and puts its endpoints on it."""
        pause = backoff(self.clock, FIRST_RETRY_S, MAX_RETRY_S)
        while True:
            try:
                if not self.lease:
                    granted = await self._call(self._leases.LeaseGrant,
                                               rpc.LeaseGrantRequest(TTL=self.ttl))
                    self.lease = granted.ID
                    self._leased.set()
                    log.info("registry %s: lease %x, %d s", self.url, self.lease, self.ttl)
                    await self._put_mine_again()
                async for answer in self._leases.LeaseKeepAlive(self._every_third()):
                    pause.reset()
                    self._failure = ""
                    if answer.TTL <= 0:
                        log.warning("registry %s: lease %x expired; taking a new one and "
                                    "registering this daemon's endpoints again", self.url,
                                    self.lease)
                        self.lease = 0
                        break
            except asyncio.CancelledError:
                raise
            except (grpc.aio.AioRpcError, NsmdError) as err:
                log.warning("registry %s: lease keepalive failed (%s); retrying within %.1f s",
                            self.url, self._failed(err), pause.next_s)
            await self._retry_after(pause.step())

    async def _every_third(self) -> AsyncIterator[Any]:
        while True:
            yield rpc.LeaseKeepAliveRequest(ID=self.lease)
            await asyncio.sleep(self.ttl / 3)

    async def _put_mine_again(self) -> None:
        for name, value in list(self._mine.items()):
            key = ENDPOINTS + name.encode()
            nse = _decode_endpoint(value)
            ops = [_put(key, value, self.lease)] + [
                _put(_claim_key(s, sub), name.encode(), self.lease) for s, sub in _subnets(nse)]
            await self._txn([], ops)

    # -- the mirror ------------------------------------------------------------------------

    async def _follow(self) -> None:
        """Loads a snapshot, then follows the watch from the next revision; a broken watch
        resumes from the last revision seen, a compacted one reloads."""
        pause = backoff(self.clock, FIRST_RETRY_S, MAX_RETRY_S)
        need_snapshot = True
        while True:
            try:
                if need_snapshot:
                    await self._load_snapshot()
                    need_snapshot = False
                    if self._synced.is_set():
                        for listener in self.on_resync:
                            listener()
                    self._synced.set()
                async for reply in self._watch.Watch(self._watch_from(self.revision + 1)):
                    pause.reset()
                    self._failure = ""
                    if reply.compact_revision:
                        log.warning("registry %s: history compacted past revision %d; "
                                    "reloading", self.url, self.revision)
                        need_snapshot = True
                        break
                    if reply.canceled:
                        raise RegistryUnavailable(f"watch canceled: {reply.cancel_reason}")
                    for event in reply.events:
                        self._apply(event)
                    self.revision = max(self.revision, reply.header.revision)
            except asyncio.CancelledError:
                raise
            except (grpc.aio.AioRpcError, NsmdError) as err:
                log.warning("registry %s: watch failed (%s); resuming from revision %d within "
                            "%.1f s", self.url, self._failed(err), self.revision + 1,
                            pause.next_s)
            await self._retry_after(pause.step())

    async def _watch_from(self, revision: int) -> AsyncIterator[Any]:
        yield rpc.WatchRequest(create_request=rpc.WatchCreateRequest(
            key=PREFIX, range_end=_range_end(PREFIX), start_revision=revision))
        await asyncio.Event().wait()  # keep the stream open

    async def _load_snapshot(self) -> None:
        reply = await self._call(self._kv.Range, rpc.RangeRequest(
            key=PREFIX, range_end=_range_end(PREFIX)))
        services, endpoints = {}, {}
        for kv in reply.kvs:
            if kv.key.startswith(SERVICES):
                ns = from_wire(NetworkService, json.loads(kv.value))
                services[ns.name] = ns
            elif kv.key.startswith(ENDPOINTS):
                nse = _decode_endpoint(kv.value)
                endpoints[nse.name] = nse
        for name in [n for n in self.services if n not in services]:
            self._drop_service(self.services[name])
        for name in [n for n in self.endpoints if n not in endpoints]:
            self._drop_endpoint(self.endpoints[name])
        for ns in services.values():
            if self.services.get(ns.name) != ns:
                self._put_service(ns)
        for nse in endpoints.values():
            self._mirror_endpoint(nse)
        self.revision = reply.header.revision
        log.info("registry %s: %d services, %d endpoints at revision %d", self.url,
                 len(self.services), len(self.endpoints), self.revision)

    def _apply(self, event: Any) -> None:
        key, deleted = event.kv.key, event.type == rpc.Event.DELETE
        try:
            if key.startswith(SERVICES):
                name = key[len(SERVICES):].decode()
                if deleted:
                    if name in self.services:
                        self._drop_service(self.services[name])
                else:
                    ns = from_wire(NetworkService, json.loads(event.kv.value))
                    if self.services.get(name) != ns:
                        self._put_service(ns)
            elif key.startswith(ENDPOINTS):
                name = key[len(ENDPOINTS):].decode()
                if deleted:
                    if name in self.endpoints:
                        self._drop_endpoint(self.endpoints[name])
                else:
                    self._mirror_endpoint(_decode_endpoint(event.kv.value))
        except (ValueError, NsmdError) as err:  # a record nsmd did not write: skip it
            log.warning("registry %s: ignoring %s: %s", self.url, key.decode(errors="replace"),
                        err)

    def _mirror_endpoint(self, nse: NetworkServiceEndpoint) -> None:
        mirrored = dataclasses.replace(nse, expiration_time=KEPT_ALIVE)
        if self.endpoints.get(nse.name) != mirrored:
            self._put_endpoint(mirrored)


def _encode(record: Any) -> bytes:
    return json.dumps(to_wire(record), separators=(",", ":")).encode()


def _decode_endpoint(value: bytes) -> NetworkServiceEndpoint:
    return from_wire(NetworkServiceEndpoint, json.loads(value))


def _subnets(nse: NetworkServiceEndpoint | None) -> list[tuple[str, str]]:
    if nse is None:
        return []
    return [(s, sub) for s in nse.network_service_names if (sub := subnets.subnet_of(nse, s))]


def _reason(err: Exception) -> str:
    if isinstance(err, grpc.aio.AioRpcError):
        return f"{err.code().name}: {err.details()}"
    return str(err)

