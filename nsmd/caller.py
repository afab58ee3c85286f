"""Who is calling: a peer daemon (mTLS), a local user (unix socket), or this daemon itself.

Policies name callers by subject: a peer by its SPIFFE ID, a local user as `unix:uid=N`
and `unix:gid=N` (primary and supplementary groups, from SO_PEERCRED and SO_PEERGROUPS,
which the kernel vouches for). The manager's authorize element reads the caller of the
request it serves from CALLER, set by the entry point (NSM carries the peer in the gRPC
context the same way); an unset caller is refused, never trusted.
"""

from __future__ import annotations

import contextvars
import dataclasses
import socket
import struct
import urllib.parse

from cryptography import x509

from nsmd.errors import PermissionDenied

SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux 4.13; Python 3.11 lacks the name
MAX_GROUPS = 256


@dataclasses.dataclass(frozen=True, slots=True)
class Caller:
    kind: str                               # "daemon", "local" or "peer"
    spiffe_id: str = ""                     # peer
    certificate: x509.Certificate | None = None  # peer: the leaf it presented in mTLS
    address: str = ""                       # peer: the IP its TLS connection came from
    url: str = ""                           # peer: where it listens (said, on `address`)
    segment: str = ""                       # peer: its path segment's id in the request
    uid: int = -1                           # local
    gids: tuple[int, ...] = ()              # local: primary group first
    pid: int = 0                            # local
    via: Caller | None = None               # daemon: the caller it acts for (passthrough)

    @property
    def subjects(self) -> list[str]:
        """The names a policy may use for this caller."""
        if self.kind == "peer":
            return [self.spiffe_id]
        if self.kind == "local":
            return [f"unix:uid={self.uid}"] + [f"unix:gid={g}" for g in self.gids]
        return []

    @property
    def is_root(self) -> bool:
        return self.kind == "local" and self.uid == 0

    def __str__(self) -> str:
        if self.kind == "peer":
            return f"{self.spiffe_id} ({self.address})"
        if self.kind == "local":
            return f"unix:uid={self.uid} (pid {self.pid})"
        return "this daemon"


DAEMON = Caller("daemon")


def tunnel_peer(caller: Caller | None) -> Caller | None:
    """The peer daemon whose request (and tunnel offer) this work serves, also through this
    daemon acting for it (a passthrough hop's onward request)."""
    while caller is not None and caller.kind == "daemon":
        caller = caller.via
    return caller if caller is not None and caller.kind == "peer" else None
CALLER: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("nsmd_caller",
                                                                      default=None)


def peer_caller(certificate: x509.Certificate, spiffe_id: str, address: str,
                said_url: str = "", sealed: bool = False) -> Caller:
    """A peer daemon as its TLS connection proved it; the URL it says it listens on is
    kept only if it is https on the very address the connection came from. `sealed`: it
    proved itself by a sealed call through the rendezvous (envelope.py), from behind a NAT
    whose address is not its listener's: its URL is kept as said, since every call to it
    expects its SPIFFE ID (mTLS) and falls back to the rendezvous."""
    parsed = urllib.parse.urlsplit(said_url)
    try:
        url = said_url if parsed.scheme == "https" and (sealed or parsed.hostname == address) \
            and parsed.port and not parsed.path.strip("/") else ""
    except ValueError:  # a bad port
        url = ""
    return Caller("peer", spiffe_id=spiffe_id, certificate=certificate, address=address,
                  url=url)


def unix_caller(sock: socket.socket) -> Caller:
    """The process at the other end of a unix socket, as the kernel recorded it."""
    pid, uid, gid = struct.unpack("3i", sock.getsockopt(
        socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * MAX_GROUPS)
        groups = struct.unpack(f"{len(raw) // 4}I", raw)
    except OSError:
        groups = ()
    gids = (gid, *(g for g in groups if g != gid))
    return Caller("local", uid=uid, gids=gids, pid=pid)


def local_caller(transport) -> Caller:
    """The caller on an API connection (the unix socket): who the kernel says it is."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family != socket.AF_UNIX:
        raise ValueError("not a unix socket connection")
    return unix_caller(sock)


def check_local_netns(caller: Caller, netns: str, what: str) -> None:
    """local_namespaces: a local user other than root puts `what` only into named network
    namespaces (`ip netns`, which only root creates), never into the daemon's own
    namespace or one reached by a path (/proc/1/ns/net)."""
    if caller.kind == "local" and not caller.is_root and (not netns or "/" in netns):
        where = repr(netns) if netns else "the daemon's own"
        raise PermissionDenied("local_namespaces", f"{caller} may put {what} only into named "
                               f"network namespaces (ip netns), not {where}")
