"""resolvconf (client side, after held): a client namespace uses the DNS its vWires bring.

A vL3 vWire comes back with a DNS context (the endpoint's resolver, the service as search
domain). For a named namespace this writes /etc/netns/NAME/resolv.conf, which
`ip netns exec NAME ...` puts in place of /etc/resolv.conf; the resolver there forwards
names outside its zone to the host's, so other lookups keep working. The file lists the
DNS of every such vWire in the namespace and goes when the last one closes. A file nsmd
did not write is left alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import defaultdict

from nsmd.manager.answer import dns_problem
from nsmd.manager.chain import Element, Next
from nsmd.model import Connection, DNSConfig, NetworkServiceRequest

ETC_NETNS = "/etc/netns"
MARK = "# written by nsmd for the vL3 vWires of this namespace; removed when they close\n"
log = logging.getLogger("nsmd.manager.resolvconf")


class ResolvConf(Element):
    def __init__(self, etc_netns: str = ETC_NETNS):
        self.etc_netns = etc_netns
        self._dns: dict[str, dict[str, list[DNSConfig]]] = defaultdict(dict)  # ns -> id -> it

    async def request(self, request: NetworkServiceRequest, nxt: Next) -> Connection:
        conn = await nxt.request(request)
        ns = _client_netns(request)
        if ns:
            had = self._dns[ns].get(conn.id)
            configs = conn.context.dns_context.configs
            if configs:
                self._dns[ns][conn.id] = list(configs)
            else:
                self._dns[ns].pop(conn.id, None)
            if had != (configs or None):
                self._write(ns)
        return conn

    async def close(self, conn: Connection, nxt: Next) -> None:
        try:
            await nxt.close(conn)
        finally:
            for ns, by_conn in list(self._dns.items()):
                if by_conn.pop(conn.id, None) is not None:
                    self._write(ns)

    def path(self, ns: str) -> str:
        return os.path.join(self.etc_netns, ns, "resolv.conf")

    def _write(self, ns: str) -> None:
        path = self.path(ns)
        if os.path.exists(path) and not _ours(path):
            log.warning("%s was not written by nsmd: leaving it as it is (the namespace's "
                        "vL3 names resolve only through its own DNS)", path)
            return
        configs = [c for cs in self._dns.get(ns, {}).values() for c in cs
                   if not dns_problem(c)]   # never a line nobody checked
        if not configs:
            self._dns.pop(ns, None)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            with contextlib.suppress(OSError):
                os.rmdir(os.path.dirname(path))  # only if nothing else lives there
            return
        servers = list(dict.fromkeys(ip for c in configs for ip in c.dns_server_ips))
        domains = list(dict.fromkeys(d for c in configs for d in c.search_domains))
        text = MARK + "".join(f"nameserver {ip}\n" for ip in servers[:3])
        if domains:
            text += f"search {' '.join(domains)}\n"
        text += "options timeout:1 attempts:2\n"
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".nsmd-tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)


def _client_netns(request: NetworkServiceRequest) -> str:
    """The client's named namespace ("" for the daemon's own or a /proc path)."""
    for mech in request.mechanism_preferences:
        ns = mech.parameters.get("netns", "")
        return ns if ns and "/" not in ns else ""
    return ""


def _ours(path: str) -> bool:
    with contextlib.suppress(OSError), open(path) as f:
        return f.readline() == MARK
    return False
