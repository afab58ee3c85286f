"""What a client's daemon takes of an endpoint host's answer (remote.py, after each call).

The far side fills in its own segments, the addresses, routes, mechanism and DNS; it may
not make the answer about another connection, service or endpoint, nor rewrite the
caller's part of the path (refused: peer_answer, and the next candidate is tried). Its
segments' expiry drives our refresh timing: each is capped at now + our token lifetime.
A DNS context must hold IP literals and domain names before any resolv.conf is written
from it (a search domain carrying a newline once added a nameserver line).
"""

from __future__ import annotations

import ipaddress
import re

from nsmd.errors import PermissionDenied
from nsmd.model import Connection, DNSConfig

_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


def check_answer(url: str, asked: Connection, answer: Connection, now: float,
                 lifetime_s: float) -> Connection:
    """Raises PermissionDenied("peer_answer") unless `answer` answers `asked`; caps the far
    segments' expiry in place and returns it."""
    def refuse(what: str) -> PermissionDenied:
        return PermissionDenied("peer_answer", f"peer {url} answered {what}")

    index = asked.path.index
    if answer.id != asked.id or answer.path.index != index:
        raise refuse(f"for connection {answer.id!r} at index {answer.path.index}, not "
                     f"{asked.id!r} at {index}")
    ours = [(s.name, s.id) for s in asked.path.path_segments[:index + 1]]
    if [(s.name, s.id) for s in answer.path.path_segments[:index + 1]] != ours:
        raise refuse("with the path before its hop rewritten")
    if answer.network_service != asked.network_service:
        raise refuse(f"for network service {answer.network_service!r}, not "
                     f"{asked.network_service!r}")
    if asked.network_service_endpoint_name and \
            answer.network_service_endpoint_name != asked.network_service_endpoint_name:
        raise refuse(f"from endpoint {answer.network_service_endpoint_name!r}, not "
                     f"{asked.network_service_endpoint_name!r}")
    for config in answer.context.dns_context.configs:
        problem = dns_problem(config)
        if problem:
            raise refuse(f"a DNS context with {problem}")
    for segment in answer.path.path_segments[index + 1:]:
        if segment.expires:
            segment.expires = min(segment.expires, now + lifetime_s)
    return answer


def dns_problem(config: DNSConfig) -> str:
    """Why a DNS config cannot go into a resolv.conf, or ""."""
    for server in config.dns_server_ips:
        try:
            ipaddress.ip_address(server)
        except ValueError:
            return f"a server that is no IP address: {server!r}"
    for domain in config.search_domains:
        name = domain.rstrip(".")
        if not name or len(name) > 253 or not all(_LABEL.fullmatch(p) for p in name.split(".")):
            return f"a search domain that is no domain name: {domain!r}"
    return ""
