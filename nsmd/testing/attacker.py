"""An attacker's test bed for the zero-trust tests: two daemons on an underlay (n1 holds
the registry and the client, n2 hosts an endpoint) and an attacker's host with an ordinary
SVID of the same trust domain and no daemon, which calls the peer APIs itself; plus calls
to the local API as another uid. What an attack must not change is `Bed.footprint()`."""

from __future__ import annotations

import json
import os
import socket
import sys
import time

from nsmd.identity import tokens
from nsmd.identity.svid import load_svid_dir
from nsmd.model import Connection, Mechanism, NetworkServiceRequest, Path, PathSegment, to_wire
from nsmd.testing.sandbox import (
    endpoint_manifest,
    service_manifest,
    sh,
    trust_domain,
    underlay,
    wait_until,
)
from nsmd.tunnel_keys import Ephemeral

TD = "test.nsmd"
N1, N2, EVIL = (f"spiffe://{TD}/node/n1", f"spiffe://{TD}/node/n2",
                f"spiffe://{TD}/workload/evil")
IP1, IP2, IP_EVIL = "192.0.2.1", "192.0.2.2", "192.0.2.3"


class Bed:
    """n1 (registry, the client's host), n2 (hosts far-1 of remote-svc), and the
    attacker's host; the attacker has no daemon, only its SVID."""

    def __init__(self, netns, daemon, tmp_path, n1_args=(), n2_args=(), env=None,
                 n2_socket: str = ""):
        nodes = underlay(netns, ["n1", "n2", "evil"])
        self.n1_ns, self.n2_ns, self.evil_ns = nodes
        ids = trust_domain(str(tmp_path), TD, [N1, N2, EVIL])
        self.evil_dir = ids[EVIL]
        self.evil = load_svid_dir(self.evil_dir)
        env = {"NSMD_KEEPALIVE_S": "0.5", **(env or {})}
        self.near = daemon("n1", self.n1_ns, ("--listen", f"{IP1}:7000", "--identity-dir",
                                              ids[N1], *n1_args), env)
        self.far = daemon("n2", self.n2_ns, ("--listen", f"{IP2}:7000", "--registry",
                                             f"https://{IP1}:7000", "--registry-id", N1,
                                             "--identity-dir", ids[N2], *n2_args), env,
                          n2_socket)
        self.nse_ns, self.nsc_ns = netns("nse"), netns("nsc")
        self.far.cli("apply", "-f", "-", stdin=service_manifest("remote-svc") + "---" +
                     endpoint_manifest("far-1", "remote-svc", self.nse_ns, "100.64.50.0/24"))
        wait_until(lambda: any(e["name"] == "far-1"
                               for e in self.near.cli_json("get", "endpoints")))

    def attack(self, method: str, url: str, body=None) -> dict:
        """One call of the attacker's, from its own host."""
        args = [sys.executable, "-m", "nsmd.testing.peercall", self.evil_dir, method, url]
        if body is not None:
            args.append(json.dumps(body))
        return json.loads(sh(*args, netns=self.evil_ns).stdout)

    def request(self, *, aud: str = N2, first=None, caller_token=None, path_tail=(),
                mechanism: Mechanism | None = None, endpoint: str = "far-1",
                service: str = "remote-svc", client: str = "nsc@evil") -> dict:
        """A Request as the attacker's own daemon would send it: path [client, evil]."""
        now = time.time()
        seg0 = tokens.sign(self.evil, EVIL, now, 600, with_chain=True)[0] if first is None \
            else first
        seg1 = tokens.sign(self.evil, aud, now, 600)[0] if caller_token is None \
            else caller_token
        conn = Connection(id="evil-seg", network_service=service,
                          network_service_endpoint_name=endpoint,
                          path=Path(index=1, path_segments=[
                              PathSegment(name=client, id="evil-client", token=seg0),
                              PathSegment(name="evil", id="evil-seg", token=seg1),
                              *path_tail]))
        mech = mechanism or Mechanism(cls="REMOTE", type="NSMD_UDP", parameters={
            "src_ip": IP_EVIL, "src_port": "51820", "src_index": "256",
            "src_public_key": Ephemeral().public_b64, "key_context": "evil-client"})
        return to_wire(NetworkServiceRequest(connection=conn, mechanism_preferences=[mech]))

    def footprint(self) -> dict:
        """What an attack must not change: connections, registry, interfaces."""
        return {
            "far_conns": sorted(c["id"] for c in self.far.cli_json("get", "connections")),
            "near_conns": sorted(c["id"] for c in self.near.cli_json("get", "connections")),
            "services": self.near.cli_json("get", "services"),
            "endpoints": sorted((e["name"], e["url"]) for e in
                                self.near.cli_json("get", "endpoints")),
            "links": {ns: links(ns) for ns in (self.nse_ns, self.n1_ns, self.n2_ns)},
        }


def links(ns: str) -> list[str]:
    return sorted(line.split(":")[1].strip() for line in
                  sh("ip", "-o", "link", netns=ns).stdout.splitlines())


def refused(result: dict, policy: str) -> None:
    assert result["status"] == 403, result
    assert result["body"]["policy"] == policy, result
    assert f"denied by policy {policy}" in result["body"]["error"], result


def as_user(uid: int, gid: int, sock_path: str, method: str, path: str,
             body: dict | None = None) -> tuple[int, dict]:
    """One API call from a process running as uid/gid (forked, no exec: the venv need not
    be readable by that user)."""
    data = json.dumps(body).encode() if body is not None else b""
    request = (f"{method} {path} HTTP/1.1\r\nHost: nsmd\r\nConnection: close\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
               ).encode() + data
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop privileges, call, report, exit at once
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(30)
                s.connect(sock_path)
                s.sendall(request)
                reply = b""
                while chunk := s.recv(65536):
                    reply += chunk
            os.write(write_end, reply)
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    reply = b""
    while chunk := os.read(read_end, 65536):
        reply += chunk
    os.close(read_end)
    os.waitpid(pid, 0)
    head, _, payload = reply.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    if b"chunked" in head.lower():
        payload = unchunk(payload)
    return status, json.loads(payload)


def unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size, _, rest = data.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        out, data = out + rest[:n], rest[n + 2:]
    return out


def connect_as(uid: int, gid: int, sock_path: str) -> None:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        errno_seen = 0
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(sock_path)
        except OSError as err:
            errno_seen = err.errno or 0
        finally:
            os.write(write_end, str(errno_seen).encode())
            os._exit(0)
    os.close(write_end)
    seen = int(os.read(read_end, 16) or b"0")
    os.close(read_end)
    os.waitpid(pid, 0)
    if seen:
        raise PermissionError(seen, os.strerror(seen))
