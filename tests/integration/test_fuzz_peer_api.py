"""The peers' API fuzzed (hypothesis) over mutual TLS, as an ordinary SVID holder of the
trust domain would: mutated Requests, closes, rekeys, drop notices and registrations, JSON
and msgpack. Every call is answered within a second, never with a 500, a refusal is one
line and changes nothing, and the daemon lives on."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import msgpack
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nsmd import netns as namespaces
from nsmd.identity import tokens
from nsmd.identity.svid import load_svid_dir
from nsmd.identity.tls import TlsContexts
from nsmd.testing.sandbox import (
    DaemonProc,
    Namespaces,
    endpoint_manifest,
    service_manifest,
    trust_domain,
    underlay,
)
from nsmd.tunnel_keys import Ephemeral
from tests.fuzzing import mutated, values

FUZZ = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])
TD = "fuzz.nsmd"
NODE, EVIL = f"spiffe://{TD}/node/n1", f"spiffe://{TD}/workload/evil"
ANSWER_WITHIN_S = 1.0


class PeerApi:
    """Calls the daemon's peer listener with the attacker's SVID, from inside the node's
    namespace (a socket keeps the namespace it was made in)."""

    def __init__(self, ns: str, address: tuple[str, int], identity_dir: str):
        self.ns, self.address = ns, address
        self.svid = load_svid_dir(identity_dir)
        self.tls = TlsContexts(self.svid).client()

    def _socket(self) -> socket.socket:
        made: dict = {}

        def work() -> None:
            try:
                namespaces.enter(self.ns)
                made["sock"] = socket.create_connection(self.address, timeout=10)
            except BaseException as err:  # handed to the caller
                made["err"] = err

        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
        if "err" in made:
            raise made["err"]
        return self.tls.wrap_socket(made["sock"])

    def call(self, method: str, path: str, body: bytes | None = None,
             content_type: str = "application/json") -> tuple[int, object, float]:
        conn = http.client.HTTPConnection("nsmd", timeout=10)
        conn.sock = self._socket()
        started = time.monotonic()
        try:
            conn.request(method, path, body=body, headers={"Content-Type": content_type})
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        took = time.monotonic() - started
        try:
            return response.status, json.loads(raw), took
        except ValueError:
            return response.status, raw.decode(errors="replace"), took


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    spaces = Namespaces(f"nsmdt-pfz{id(tmp_path_factory) % 10000}")
    work = tmp_path_factory.mktemp("peerfuzz")
    ids = trust_domain(str(work), TD, [NODE, EVIL])
    d = None
    try:
        ((node, ip),) = underlay(spaces.make, ["n1"]).items()
        nse_ns = spaces.make("nse")
        d = DaemonProc(str(work / "n1"), "n1", node, ("--listen", f"{ip}:7000",
                                                      "--identity-dir", ids[NODE]))
        (work / "n1").mkdir()
        d.start()
        d.cli("apply", "-f", "-", stdin=service_manifest("svc") + "---" +
              endpoint_manifest("e1", "svc", nse_ns, "100.64.11.0/24") + "---" +
              endpoint_manifest("e6", "svc", nse_ns, "2001:db8:11::/64"))
        yield d, PeerApi(node, (ip, 7000), ids[EVIL]), ip
    finally:
        if d is not None:
            d.stop()
        spaces.cleanup()


def state(d: DaemonProc) -> dict:
    endpoints = d.client.call("GET", "/v1/endpoints")
    for nse in endpoints:
        nse.pop("expiration_time")
    return {"services": d.client.call("GET", "/v1/services"), "endpoints": endpoints,
            "connections": d.client.call("GET", "/v1/connections")}


def encode(body: object, form: str) -> tuple[bytes, str]:
    if form == "msgpack":
        try:
            return msgpack.packb(body), "application/msgpack"
        except (OverflowError, ValueError, TypeError):
            assume(False)
    return json.dumps(body).encode(), "application/json"


def check(bed, path: str, body: object, form: str) -> None:
    d, api, _ = bed
    before = state(d)
    raw, content_type = encode(body, form)
    status, answer, took = api.call("POST", path, raw, content_type)
    assert took < ANSWER_WITHIN_S, (path, took, body)
    assert status < 500 or status == 503, (status, answer, body)   # 503: nothing can serve
    if status >= 400:
        assert isinstance(answer, dict) and isinstance(answer.get("error"), str), answer
        assert answer["error"] and "\n" not in answer["error"], answer
        assert state(d) == before, (status, answer, body)
    elif path == "/v1/peer/request":   # valid by chance: close it again
        api.call("POST", "/v1/peer/close", json.dumps(answer).encode())


def request_template(api: PeerApi, ip: str, endpoint: str = "e1") -> dict:
    now = time.time()
    first = tokens.sign(api.svid, EVIL, now, 600, with_chain=True)[0]
    mine = tokens.sign(api.svid, NODE, now, 600)[0]
    return {"connection": {
        "id": "evil-seg", "network_service": "svc", "network_service_endpoint_name": endpoint,
        "labels": {}, "context": {"ip_context": {"excluded_prefixes": ["::/0"]}},
        "path": {"index": 1, "path_segments": [
            {"name": "nsc@evil", "id": "evil-client", "token": first},
            {"name": "evil", "id": "evil-seg", "token": mine}]}},
        "mechanism_preferences": [{"cls": "REMOTE", "type": "NSMD_UDP", "parameters": {
            "src_ip": ip, "src_port": "51820", "src_index": "256", "key_context": "evil",
            "src_public_key": Ephemeral().public_b64}}]}


FORMS = st.sampled_from(("json", "msgpack"))


@FUZZ
@given(st.data())
def test_requests_closes_and_drop_notices(bed, data):
    template = request_template(bed[1], bed[2], data.draw(st.sampled_from(("e1", "e6"))))
    path = data.draw(st.sampled_from(("/v1/peer/request", "/v1/peer/close",
                                      "/v1/peer/dropped")))
    body = template if path == "/v1/peer/request" else template["connection"]
    check(bed, path, data.draw(st.just(body) | mutated(body) | values), data.draw(FORMS))


@FUZZ
@given(st.data())
def test_rekeys(bed, data):
    template = request_template(bed[1], bed[2])
    body = {"connection_id": "evil-seg",
            "offer": template["mechanism_preferences"][0]["parameters"]}
    check(bed, "/v1/peer/rekey", data.draw(mutated(body) | values), data.draw(FORMS))


@FUZZ
@given(st.data())
def test_registrations(bed, data):
    path, template = data.draw(st.sampled_from((
        ("/v1/services", {"name": "fz", "payload": "IP", "matches": [
            {"source_selector": {"a": "b"}, "routes": [{"destination_selector": {"c": "d"}}]}]}),
        ("/v1/endpoints", {"name": "fz-e", "network_service_names": ["fz"],
                           "network_service_labels": {"fz": {"labels": {"k": "v"}}},
                           "url": "https://192.0.2.9:7000"}))))
    body = data.draw(mutated(template) | values)
    d, api, _ = bed
    before = state(d)
    raw, content_type = encode(body, data.draw(FORMS))
    status, answer, took = api.call("POST", path, raw, content_type)
    assert took < ANSWER_WITHIN_S and status < 500, (status, answer, took, body)
    if status >= 400:
        assert state(d) == before, (status, answer, body)
    elif isinstance(answer, dict) and isinstance(answer.get("name"), str):  # valid: undo
        api.call("DELETE", f"{path}/{answer['name']}")


@FUZZ
@given(st.binary(max_size=300), FORMS, st.sampled_from((
    "/v1/peer/request", "/v1/peer/close", "/v1/peer/rekey", "/v1/peer/dropped",
    "/v1/services", "/v1/endpoints")))
def test_bytes_that_are_no_document(bed, raw, form, path):
    d, api, _ = bed
    before = state(d)
    status, answer, took = api.call("POST", path, raw, "application/msgpack"
                                    if form == "msgpack" else "application/json")
    assert took < ANSWER_WITHIN_S and status < 500, (status, answer, took, raw)
    assert state(d) == before


def test_the_daemon_lives_on(bed):
    d, _, _ = bed
    assert d.client.call("GET", "/healthz")["ok"] is True
