"""Inter-domain names (NSM's interdomain): `service@domain`, `endpoint@domain`.

A name without `@`, or with this daemon's own domain, is local. Any other domain's
registry is found in the `--domains` file (TOML: "DOMAIN" = "https://HOST:PORT", or
"DOMAIN" = {url = "https://HOST:PORT", trust_domain = "TD"}) or by DNS SRV
`_nsmd-registry._tcp.DOMAIN` (the target's A/AAAA record and the SRV port), asked of the
host's resolvers (`--dns-upstream` or resolv.conf). dnslib does the wire format.

Wherever the address came from, the registry must present an SVID of that domain's
trust domain (the domain's own name unless the file says another): whoever answers DNS
and holds any SVID we trust cannot stand in for another domain's registry.
"""

from __future__ import annotations

import logging
import tomllib

from dnslib import QTYPE, DNSRecord
from dnslib.dns import DNSError

from nsmd.dnsclient import ask_first
from nsmd.errors import NotFound, ValidationError

SRV_PREFIX = "_nsmd-registry._tcp."
DNS_TIMEOUT_S = 2.0
log = logging.getLogger("nsmd.domains")


def split(name: str) -> tuple[str, str]:
    """"svc@dom" -> ("svc", "dom"); "svc" -> ("svc", "")."""
    local, _, domain = name.partition("@")
    return local, domain


def load_table(path: str) -> dict[str, tuple[str, str]]:
    """The --domains file: {domain: (registry URL, its trust domain)}; errors name the file
    and the key."""
    if not path:
        return {}
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ValidationError("domains", "a TOML file of \"DOMAIN\" = \"https://HOST:PORT\"",
                              path, detail=f"domains: {path}: {err}") from None
    table = {}
    for domain, entry in raw.items():
        url, td = (entry, domain) if isinstance(entry, str) else (
            (entry.get("url"), entry.get("trust_domain", domain)) if isinstance(entry, dict)
            else (None, None))
        if not isinstance(url, str) or not url.startswith("https://"):
            raise ValidationError(f"domains: {path}: {domain}", "https://HOST:PORT, or "
                                  "{url = \"https://HOST:PORT\", trust_domain = \"TD\"}", entry)
        if not isinstance(td, str) or not td or "/" in td:
            raise ValidationError(f"domains: {path}: {domain}.trust_domain",
                                  "a trust domain name", td)
        table[domain] = (url, td)
    return table


class Domains:
    def __init__(self, own: str, table: dict[str, tuple[str, str]] | None = None,
                 dns_servers: list[tuple[str, int]] | None = None):
        self.own = own
        self.table = table or {}
        self.dns_servers = dns_servers or []

    def registry_id(self, domain: str) -> str:
        """What that domain's registry must present: "spiffe://TD", any ID of its trust
        domain (the domain's name unless the --domains file says another)."""
        return f"spiffe://{self.table[domain][1] if domain in self.table else domain}"

    def foreign(self, name: str) -> str:
        """The domain of `name` if it is another domain's, else ""."""
        _, domain = split(name)
        return domain if domain and domain != self.own else ""

    def localize(self, name: str) -> str:
        """`name` as this domain calls it (its own domain dropped)."""
        local, domain = split(name)
        return local if domain == self.own else name

    async def registry_url(self, domain: str) -> str:
        if domain in self.table:
            return self.table[domain][0]
        try:
            host, port = await self._srv(domain)
        except (OSError, DNSError, TimeoutError) as err:
            raise NotFound(f"domain {domain!r}: no registry in --domains and no DNS SRV "
                           f"{SRV_PREFIX}{domain} ({err})") from None
        url = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        log.info("domain %s: registry %s (DNS SRV)", domain, url)
        return url

    async def _srv(self, domain: str) -> tuple[str, int]:
        srv = await self._ask(SRV_PREFIX + domain, "SRV")
        records = [rr for rr in srv.rr if rr.rtype == QTYPE.SRV]
        if not records:
            raise OSError("no SRV record")
        best = min(records, key=lambda rr: (rr.rdata.priority, -rr.rdata.weight))
        target, port = str(best.rdata.target), best.rdata.port
        addresses = [str(rr.rdata) for rr in srv.ar if rr.rtype in (QTYPE.A, QTYPE.AAAA)
                     and str(rr.rname) == target]
        if not addresses:
            answer = await self._ask(target, "A")
            addresses = [str(rr.rdata) for rr in answer.rr if rr.rtype == QTYPE.A]
        if not addresses:
            raise OSError(f"no address for {target}")
        return addresses[0], port

    async def _ask(self, name: str, qtype: str) -> DNSRecord:
        if not self.dns_servers:
            raise OSError("no DNS server to ask")
        answer = await ask_first(DNSRecord.question(name, qtype), self.dns_servers,
                                 DNS_TIMEOUT_S)
        if answer is None:
            raise TimeoutError(f"no DNS server answered for {name}")
        return answer
