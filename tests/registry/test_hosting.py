import pytest

from nsmd.hosting import Hosting
from nsmd.model import NetworkServiceEndpoint
from nsmd.model.endpoint_spec import EndpointSpec
from nsmd.peer.client import PeerError
from nsmd.registry import Registry
from nsmd.registry.view import KEPT_ALIVE
from nsmd.state import StateDB
from nsmd.testing.fake_clock import FakeClock


@pytest.fixture
async def env(tmp_path):
    clock = FakeClock()
    db = StateDB(str(tmp_path))
    registry = Registry(db, clock)
    hosting = Hosting(db, registry, clock, "unix:///run/n.sock")
    yield clock, db, registry, hosting
    hosting.close()
    registry.close()
    db.close()


async def test_the_own_registry_keeps_hosted_endpoints_alive_without_refreshes(env):
    clock, db, registry, hosting = env
    nse = await hosting.apply(NetworkServiceEndpoint(name="e", network_service_names=["s"]),
                              EndpointSpec())
    assert nse.url == "unix:///run/n.sock"
    assert nse.expiration_time == KEPT_ALIVE
    writes = []
    real_put = db.put
    db.put = lambda table, key, doc: (writes.append(key), real_put(table, key, doc))
    await clock.run(3600)  # an hour: no timer, no write, still registered
    assert "e" in registry.endpoints and writes == [] and hosting.timers.armed() == {}


def forgetful(registry) -> None:
    """Makes `registry` refuse to keep records alive, like another daemon's registry."""
    real = registry.register_endpoint

    async def register(nse, owner=None, keep=False):
        return await real(nse, owner)

    registry.register_endpoint = register


async def test_a_registry_that_cannot_keep_them_gets_them_again_at_two_thirds(env):
    clock, _, registry, hosting = env
    forgetful(registry)
    nse = await hosting.apply(NetworkServiceEndpoint(name="e", network_service_names=["s"]),
                              EndpointSpec())
    first_expiry = nse.expiration_time
    await clock.run(39.9)
    assert registry.endpoints["e"].expiration_time == first_expiry
    await clock.run(0.2)
    assert registry.endpoints["e"].expiration_time == pytest.approx(clock.now + 60, abs=0.2)
    await clock.run(600)  # it stays registered as long as the daemon lives
    assert "e" in registry.endpoints


async def test_endpoints_register_only_while_their_namespace_exists(env, tmp_path, monkeypatch):
    clock, _, registry, hosting = env
    monkeypatch.setattr("nsmd.netns.NETNS_RUN_DIR", str(tmp_path))
    await hosting.apply(NetworkServiceEndpoint(name="e", network_service_names=["s"]),
                  EndpointSpec(netns="ns1"))
    assert "e" not in registry.endpoints
    (tmp_path / "ns1").touch()
    await hosting.check_namespaces()
    assert "e" in registry.endpoints
    (tmp_path / "ns1").unlink()
    await hosting.check_namespaces()
    assert "e" not in registry.endpoints
    clock.advance(100)  # no re-registration timer is left behind
    assert "e" not in registry.endpoints


async def test_removed_endpoints_are_no_longer_refreshed(env):
    clock, _, registry, hosting = env
    forgetful(registry)
    await hosting.apply(NetworkServiceEndpoint(name="e", network_service_names=["s"]),
                        EndpointSpec())
    assert hosting.remove("e")
    clock.advance(61)
    assert "e" not in registry.endpoints
    assert not hosting.remove("e")


async def test_hosted_specs_come_back_after_a_restart(env, tmp_path):
    clock, db, registry, hosting = env
    await hosting.apply(NetworkServiceEndpoint(name="e", network_service_names=["s"]),
                  EndpointSpec(ifname="eth7"))
    hosting.close()  # the daemon stops ...
    registry.close()
    registry = Registry(db, clock)  # ... and starts again an hour later
    clock.advance(3600)  # (its registry gave the record one period: it expired)
    assert "e" not in registry.endpoints
    again = Hosting(db, registry, clock, "unix:///new.sock")
    await again.start()
    try:
        assert again.spec("e").ifname == "eth7"
        assert registry.endpoints["e"].url == "unix:///new.sock"
    finally:
        again.close()
        registry.close()


async def test_a_restart_with_the_registry_down_starts_and_keeps_registering(env, monkeypatch):
    clock, db, registry, hosting = env
    await hosting.apply(NetworkServiceEndpoint(name="e", network_service_names=["s"]),
                        EndpointSpec())
    hosting.close()
    await registry.unregister_endpoint("e")
    real = registry.register_endpoint
    down = True

    async def register(nse, owner=None, keep=False):
        if down:
            raise PeerError("registry unreachable")
        return await real(nse)

    monkeypatch.setattr(registry, "register_endpoint", register)
    again = Hosting(db, registry, clock, "unix:///new.sock")
    await again.start()  # does not raise: the daemon comes up without its registry
    try:
        await clock.run(5)
        assert "e" not in registry.endpoints
        down = False
        await clock.run(1.1)  # retried every second
        assert registry.endpoints["e"].url == "unix:///new.sock"
    finally:
        again.close()


async def test_namespaces_are_checked_once_however_many_endpoints_they_hold(
        env, tmp_path, monkeypatch):
    clock, _, registry, hosting = env
    monkeypatch.setattr("nsmd.netns.NETNS_RUN_DIR", str(tmp_path))
    (tmp_path / "ns1").touch()
    for i in range(250):
        await hosting.apply(NetworkServiceEndpoint(name=f"e{i}", network_service_names=["s"]),
                            EndpointSpec(netns="ns1"))
    looked = []
    real_exists = __import__("nsmd.netns", fromlist=["exists"]).exists
    monkeypatch.setattr("nsmd.netns.exists", lambda ns: looked.append(ns) or real_exists(ns))
    await hosting.check_namespaces()
    assert looked == ["ns1"] and len(registry.endpoints) == 250
    (tmp_path / "ns1").unlink()
    # an endpoint applied after the namespace went, before the next check, changes nothing
    await hosting.apply(NetworkServiceEndpoint(name="late", network_service_names=["s"]),
                        EndpointSpec(netns="ns1"))
    await hosting.check_namespaces()
    assert registry.endpoints == {}
