"""The HTTP API of an in-process daemon, over its real unix socket (no namespaces needed)."""

from __future__ import annotations

import asyncio
import json
import os
import stat

import aiohttp
import msgpack
import pytest

from nsmd.api.app import build_app
from nsmd.config import Config
from nsmd.daemon import Daemon
from nsmd.errors import Conflict

NS = {"apiVersion": "networkservicemesh.io/v1", "kind": "NetworkService",
      "metadata": {"name": "svc"}, "spec": {"payload": "IP"}}


def nse_doc(name="e1", prefix="169.254.0.0/16", netns=""):
    return {"apiVersion": "networkservicemesh.io/v1", "kind": "NetworkServiceEndpoint",
            "metadata": {"name": name},
            "spec": {"network_service_names": ["svc"],
                     "network_service_labels": {"svc": {"labels": {"app": "a"}}},
                     "nsmd": {"netns": netns, "ipam": {"prefix": prefix}}}}


@pytest.fixture
async def daemon(tmp_path):
    cfg = Config(name="n1", state_dir=str(tmp_path / "state"),
                 api_socket=str(tmp_path / "api.sock")).validate()
    d = Daemon(cfg)
    await d.start()
    yield d
    await d.stop()


@pytest.fixture
async def http(daemon):
    connector = aiohttp.UnixConnector(path=daemon.config.api_socket)
    async with aiohttp.ClientSession(connector=connector, base_url="http://nsmd") as session:
        yield session


async def test_socket_is_private(daemon):
    mode = os.stat(daemon.config.api_socket).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600


async def test_apply_then_find_and_get(http):
    async with http.post("/v1/apply", json={"documents": [NS, nse_doc()]}) as r:
        assert r.status == 200
        assert [a["action"] for a in (await r.json())["applied"]] == ["created", "created"]
    async with http.post("/v1/apply", json={"documents": [NS]}) as r:
        assert (await r.json())["applied"][0]["action"] == "configured"
    async with http.get("/v1/endpoints", params={"service": "svc"}) as r:
        (nse,) = await r.json()
    assert nse["url"].startswith("unix://") and nse["expiration_time"].endswith("Z")
    async with http.get("/v1/endpoints/e1") as r:
        assert (await r.json())["nsmd"]["ipam"]["prefix"] == "169.254.0.0/16"
    async with http.get("/v1/services/svc", headers={"Accept": "application/msgpack"}) as r:
        assert msgpack.unpackb(await r.read())["payload"] == "IP"


async def test_endpoints_wait_for_their_namespace(http, daemon):
    async with http.post("/v1/apply", json={"documents": [nse_doc(netns="nsmd-no-such-ns")]}) \
            as r:
        (applied,) = (await r.json())["applied"]
    assert applied["waiting_for_netns"] == "nsmd-no-such-ns"
    assert daemon.registry.endpoints == {} and daemon.hosting.spec("e1") is not None


async def test_a_bad_document_applies_nothing(http, daemon):
    docs = [NS, nse_doc("e1"), nse_doc("e2", prefix="not-a-prefix")]
    async with http.post("/v1/apply", json={"documents": docs}) as r:
        body = await r.json()
    assert r.status == 400
    assert body["field"] == "NetworkServiceEndpoint 'e2': spec.nsmd.ipam.prefix"
    assert daemon.registry.services == {} and daemon.registry.endpoints == {}


@pytest.mark.parametrize("method, path, body, status, field", [
    ("POST", "/v1/apply", {"documents": []}, 400, "documents"),
    ("POST", "/v1/connections", {"network_service": 7}, 400, "network_service"),
    ("POST", "/v1/connections", {"network_service": "svc", "colour": 1}, 400, "colour"),
    ("POST", "/v1/connections", {"network_service": "svc", "labels": ["x"]}, 400, "labels"),
    ("GET", "/v1/services?watch=maybe", None, 400, "watch"),
    ("GET", "/v1/services/none", None, 404, None),
    ("DELETE", "/v1/connections/none", None, 404, None),
    ("GET", "/v1/nothing-here", None, 404, None),
])
async def test_errors_are_json_with_the_field(http, method, path, body, status, field):
    async with http.request(method, path, json=body) as r:
        data = await r.json()
    assert r.status == status and data["error"]
    if field:
        assert data["field"] == field


async def test_malformed_bodies_are_refused(http):
    async with http.post("/v1/apply", data=b"{nope",
                         headers={"Content-Type": "application/json"}) as r:
        assert r.status == 400 and "not valid JSON" in (await r.json())["error"]
    async with http.post("/v1/apply", data=b"\xc1",
                         headers={"Content-Type": "application/msgpack"}) as r:
        assert r.status == 400 and "msgpack" in (await r.json())["error"]


async def test_endpoint_watch_streams_snapshot_then_changes(http, daemon):
    async with http.post("/v1/apply", json={"documents": [NS, nse_doc("e1")]}):
        pass
    async with http.get("/v1/endpoints", params={"watch": "true"}) as r:
        first = json.loads(await r.content.readline())
        assert json.loads(await r.content.readline()) == {"synced": True}
        async with http.post("/v1/apply", json={"documents": [nse_doc("e2")]}):
            pass
        second = json.loads(await r.content.readline())
        async with http.delete("/v1/endpoints/e1"):
            pass
        third = json.loads(await asyncio.wait_for(r.content.readline(), 5))
    assert (first["item"]["name"], first["deleted"]) == ("e1", False)
    assert (second["item"]["name"], second["deleted"]) == ("e2", False)
    assert (third["item"]["name"], third["deleted"]) == ("e1", True)


async def test_monitor_starts_with_the_initial_state(http):
    async with http.get("/v1/monitor", params={"service": "svc"}) as r:
        event = json.loads(await r.content.readline())
    assert event == {"type": "INITIAL_STATE_TRANSFER", "connections": {}}


async def test_openapi_describes_every_route(http, daemon):
    async with http.get("/v1/openapi.json") as r:
        doc = await r.json()
    app = build_app(daemon)  # the routes the daemon serves
    routes = {(res.canonical, route.method.lower()) for res in app.router.resources()
              for route in res if route.method != "HEAD"}
    documented = {(path, m) for path, ops in doc["paths"].items() for m in ops}
    assert routes == documented


async def test_health_and_metrics(http):
    async with http.get("/healthz") as r:
        assert await r.json() == {"ok": True}
    async with http.get("/metrics") as r:
        text = await r.text()
    assert "nsmd_connections 0.0" in text and 'nsmd_drops_total{reason="malformed"}' in text


async def test_a_second_daemon_on_the_same_state_is_refused(daemon, tmp_path):
    other = Daemon(Config(name="n2", state_dir=daemon.config.state_dir,
                          api_socket=str(tmp_path / "other.sock")))
    with pytest.raises(Conflict, match="in use by another nsmd"):
        await other.start()
    third = Daemon(Config(name="n3", state_dir=str(tmp_path / "s3"),
                          api_socket=daemon.config.api_socket))
    with pytest.raises(Conflict, match="another daemon is serving"):
        await third.start()
    await third.stop()
