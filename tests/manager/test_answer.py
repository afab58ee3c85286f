"""answer: what a client's daemon takes of an endpoint host's answer."""

import pytest

from nsmd.errors import PermissionDenied
from nsmd.manager.answer import check_answer, dns_problem
from nsmd.model import Connection, DNSConfig, Path, PathSegment


def asked() -> Connection:
    return Connection(id="mine", network_service="svc", network_service_endpoint_name="e1",
                      path=Path(index=1, path_segments=[PathSegment(name="nsc", id="c0"),
                                                        PathSegment(name="a", id="mine")]))


def answered(**changes) -> Connection:
    conn = asked()
    conn.path.path_segments.append(PathSegment(name="b", id="theirs", expires=10_000.0))
    for key, value in changes.items():
        setattr(conn, key, value)
    return conn


@pytest.mark.parametrize("changes", [{"id": "other"}, {"network_service": "x"},
                                     {"network_service_endpoint_name": "e2"}])
def test_an_answer_about_something_else_is_refused(changes):
    with pytest.raises(PermissionDenied) as info:
        check_answer("https://b", asked(), answered(**changes), 0.0, 600.0)
    assert info.value.policy == "peer_answer"


def test_the_callers_path_is_not_the_answerers_to_change_and_expiry_is_capped():
    rewritten = answered()
    rewritten.path.path_segments[0].id = "someone"
    with pytest.raises(PermissionDenied, match="path before its hop"):
        check_answer("https://b", asked(), rewritten, 0.0, 600.0)
    ok = check_answer("https://b", asked(), answered(), 1000.0, 600.0)
    assert ok.path.path_segments[2].expires == 1600.0


@pytest.mark.parametrize("config, problem", [
    (DNSConfig(dns_server_ips=["100.64.0.1"], search_domains=["vl3", "a.b-c.example."]), ""),
    (DNSConfig(dns_server_ips=["100.64.0.1\nnameserver 1.1.1.1"]), "no IP address"),
    (DNSConfig(search_domains=["x\nnameserver 203.0.113.9"]), "no domain name"),
    (DNSConfig(search_domains=["-bad.example"]), "no domain name"),
    (DNSConfig(search_domains=["a" * 64]), "no domain name"),
])
def test_dns_contexts_hold_ip_literals_and_domain_names(config, problem):
    found = dns_problem(config)
    assert (problem in found) if problem else found == ""
