"""The HTTP API fuzzed (hypothesis), JSON and msgpack: every bad body gets a 4xx with one
line of error and changes nothing; every call is answered within a second, none with a
500; the daemon lives on. (The peers' API: test_fuzz_peer_api.py.)

The daemon runs in a namespace of the test's own, so whatever a fuzzed body that happens to
be valid creates (a vWire, say) lands there.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.parse

import msgpack
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nsmd.testing.sandbox import endpoint_manifest, service_manifest
from tests.fuzzing import mutated, values

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,  # the same cases in CI
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])
SERVICE = {"apiVersion": "networkservicemesh.io/v1", "kind": "NetworkService",
           "metadata": {"name": "svc"}, "spec": {"payload": "IP", "matches": [
               {"source_selector": {"app": "a"}, "routes": [
                   {"destination_selector": {"app": "b"}}]}]}}


BED_NAMES = ("plain", "e1", "svc", "e3")  # what the bed and the other tests register
ANSWER_WITHIN_S = 1.0


class Api:
    def __init__(self, path: str):
        self.path = path

    def call(self, method: str, url: str, body: bytes | None = None,
             content_type: str = "application/json") -> tuple[int, object]:
        conn = http.client.HTTPConnection("nsmd", timeout=30)
        conn.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.sock.settimeout(30)
        conn.sock.connect(self.path)
        started = time.monotonic()
        try:
            conn.request(method, url, body=body, headers={"Content-Type": content_type})
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        took = time.monotonic() - started
        assert took < ANSWER_WITHIN_S, (method, url, took, body)
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, raw.decode(errors="replace")

    def state(self) -> dict:
        """What a refused call must not change."""
        endpoints = self.call("GET", "/v1/endpoints")[1]
        assert isinstance(endpoints, list)
        for nse in endpoints:
            nse.pop("expiration_time")  # re-registration moves it
        return {"services": self.call("GET", "/v1/services")[1], "endpoints": endpoints,
                "connections": self.call("GET", "/v1/connections")[1]}


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    from nsmd.testing.sandbox import DaemonProc, Namespaces

    spaces = Namespaces(f"nsmdt-fuzz{id(tmp_path_factory) % 10000}")
    work = tmp_path_factory.mktemp("fuzz")
    d = DaemonProc(str(work / "d"), "fuzz", "")
    try:
        host, nse_ns = spaces.make("host"), spaces.make("nse")
        d.netns = host
        (work / "d").mkdir()
        d.start()
        d.cli("apply", "-f", "-", stdin=service_manifest("plain") + "---" +
              endpoint_manifest("e1", "plain", nse_ns, "100.64.9.0/24"))
        yield Api(d.socket), nse_ns
    finally:
        d.stop()
        spaces.cleanup()


def encode(body: object, form: str) -> tuple[bytes, str]:
    if form == "msgpack":
        try:
            return msgpack.packb(body), "application/msgpack"
        except (OverflowError, ValueError, TypeError):
            assume(False)
    return json.dumps(body).encode(), "application/json"


def check(api: Api, before: dict, method: str, url: str, body: object, form: str) -> dict:
    """One fuzzed call; returns the state to compare the next one with."""
    raw, content_type = encode(body, form)
    status, answer = api.call(method, url, raw, content_type)
    assert status < 500, (status, answer, body)
    if status >= 400:
        assert isinstance(answer, dict) and isinstance(answer.get("error"), str), answer
        assert answer["error"] and "\n" not in answer["error"], answer
        assert "Traceback" not in answer["error"]
        assert api.state() == before, (status, answer, body)
        return before
    if method == "POST" and url == "/v1/connections":  # valid by chance: undo it
        assert api.call("DELETE", f"/v1/connections/{answer['id']}")[0] == 200
    return api.state()


FORMS = st.sampled_from(("json", "msgpack"))


@FUZZ
@given(st.data())
def test_apply(bed, data):
    api, nse_ns = bed
    endpoint = json.loads(json.dumps(_endpoint(nse_ns)))
    docs = data.draw(st.lists(mutated(SERVICE) | mutated(endpoint), min_size=1, max_size=2))
    body = data.draw(st.just({"documents": docs}) | mutated({"documents": docs}) | values)
    check(api, api.state(), "POST", "/v1/apply", body, data.draw(FORMS))


@FUZZ
@given(st.data())
def test_connect(bed, data):
    api, _ = bed
    body = data.draw(mutated({"network_service": "plain", "labels": {"app": "a"},
                              "netns": "", "ifname": "fz0", "client": "fuzz",
                              "timeout_s": 0}) | values)
    if isinstance(body, dict) and isinstance(body.get("timeout_s"), int | float):
        body["timeout_s"] = min(body["timeout_s"], 0.5)  # keep retries short
    check(api, api.state(), "POST", "/v1/connections", body, data.draw(FORMS))


@FUZZ
@given(st.data())
def test_registry_writes(bed, data):
    api, _ = bed
    service = {"name": "svc2", "payload": "IP", "matches": SERVICE["spec"]["matches"]}
    endpoint = {"name": "e2", "network_service_names": ["svc2"],
                "network_service_labels": {"svc2": {"labels": {"app": "b"}}},
                "url": "unix:///x"}
    url, template = data.draw(st.sampled_from((("/v1/services", service),
                                               ("/v1/endpoints", endpoint))))
    body = data.draw(mutated(template) | values)
    check(api, api.state(), "POST", url, body, data.draw(FORMS))
    name = body.get("name") if isinstance(body, dict) else None
    if isinstance(name, str) and name and name not in BED_NAMES:  # valid by chance: undo
        api.call("DELETE", f"{url}/{urllib.parse.quote(name, safe='')}")


@FUZZ
@given(st.binary(max_size=200), FORMS, st.sampled_from((
    "/v1/apply", "/v1/connections", "/v1/services", "/v1/endpoints")))
def test_bytes_that_are_no_document(bed, raw, form, url):
    api, _ = bed
    before = api.state()
    status, answer = api.call("POST", url, raw, "application/msgpack" if form == "msgpack"
                              else "application/json")
    assert status < 500, (status, answer, raw)
    if status >= 400:
        assert api.state() == before


@FUZZ
@given(st.text(max_size=20), st.text(max_size=10), st.text(max_size=20))
def test_queries_and_names(bed, service, watch, name):
    api, _ = bed
    quote = urllib.parse.quote
    for url in (f"/v1/endpoints?service={quote(service)}&watch={quote(watch)}&x=1",
                f"/v1/services?name={quote(service)}&watch={quote(watch)}",
                f"/v1/connections/{quote(name, safe='')}",
                f"/v1/monitor?connection={quote(name)}&service={quote(service)}"):
        if "watch=" in url and watch in ("1", "true") or url.startswith("/v1/monitor"):
            continue  # a valid watch or monitor streams forever
        status, answer = api.call("GET", url)
        assert status < 500, (url, status, answer)


def test_the_daemon_lives_on(bed):
    api, _ = bed
    assert api.call("GET", "/healthz")[0] == 200


def _endpoint(nse_ns: str) -> dict:
    return {"apiVersion": "networkservicemesh.io/v1", "kind": "NetworkServiceEndpoint",
            "metadata": {"name": "e3"},
            "spec": {"network_service_names": ["svc"],
                     "network_service_labels": {"svc": {"labels": {"app": "b"}}},
                     "nsmd": {"netns": nse_ns, "ifname": "nsm0",
                              "ipam": {"prefix": "100.64.10.0/24"},
                              "functions": [{"name": "firewall", "config": {
                                  "default": "allow", "rules": [
                                      {"action": "deny", "proto": "udp", "ports": "53"}]}}]}}}
