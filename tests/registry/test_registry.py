import asyncio

import pytest

from nsmd.errors import NotFound, ValidationError
from nsmd.model import NetworkService, NetworkServiceEndpoint, ServiceLabels
from nsmd.registry import EndpointQuery, Registry, ServiceQuery
from nsmd.state import StateDB
from nsmd.testing.fake_clock import FakeClock


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def db(tmp_path):
    db = StateDB(str(tmp_path / "state"))
    yield db
    db.close()


@pytest.fixture
async def registry(db, clock):
    reg = Registry(db, clock)
    yield reg
    reg.close()


def nse(name, *services, url="unix:///x", **labels):
    return NetworkServiceEndpoint(
        name=name, network_service_names=list(services), url=url,
        network_service_labels={s: ServiceLabels(labels=dict(labels)) for s in services})


async def test_register_is_an_upsert_and_find_filters_by_nsm_rules(registry):
    await registry.register_service(NetworkService(name="a"))
    await registry.register_service(NetworkService(name="a", payload="ETHERNET"))
    await registry.register_service(NetworkService(name="b"))
    assert [s.payload for s in registry.find_services(ServiceQuery(name="a"))] == ["ETHERNET"]
    assert [s.name for s in registry.find_services(ServiceQuery(payload="IP"))] == ["b"]

    await registry.register_endpoint(nse("e1", "a", "b", app="x", tier="1"))
    await registry.register_endpoint(nse("e2", "a", url="https://other:1", app="y"))
    find = registry.find_endpoints
    assert {e.name for e in find(EndpointQuery(network_service_names=("a",)))} == {"e1", "e2"}
    assert [e.name for e in find(EndpointQuery(network_service_names=("a", "b")))] == ["e1"]
    assert [e.name for e in find(EndpointQuery(labels=(("a", (("app", "x"),)),)))] == ["e1"]
    assert [e.name for e in find(EndpointQuery(url="other"))] == ["e2"]
    assert [e.name for e in find(EndpointQuery(name="e2"))] == ["e2"]


async def test_unregister_unknown_names_is_an_error(registry):
    with pytest.raises(NotFound):
        await registry.unregister_service("nope")
    with pytest.raises(NotFound):
        await registry.unregister_endpoint("nope")


async def test_endpoints_expire_after_the_period_unless_re_registered(registry, clock):
    first = await registry.register_endpoint(nse("e1", "s"))
    assert first.expiration_time == clock.now + 60
    assert first.initial_registration_time == clock.now
    await registry.register_endpoint(nse("e2", "s"))
    clock.advance(40)
    again = await registry.register_endpoint(nse("e1", "s"))
    assert again.initial_registration_time == first.initial_registration_time
    clock.advance(21)  # e2 is 61 s old, e1 was renewed 21 s ago
    assert [e.name for e in registry.endpoints_of("s")] == ["e1"]
    clock.advance(40)
    assert registry.endpoints_of("s") == []


async def test_expiration_is_the_earlier_of_requested_and_the_period(registry, clock):
    shorter = nse("e1", "s")
    shorter.expiration_time = clock.now + 10
    assert (await registry.register_endpoint(shorter)).expiration_time == clock.now + 10
    past = nse("e2", "s")
    past.expiration_time = clock.now - 1
    with pytest.raises(ValidationError, match="expiration_time"):
        await registry.register_endpoint(past)
    assert "e2" not in registry.endpoints


async def test_invalid_records_change_nothing(registry):
    with pytest.raises(ValidationError, match="network_service_names"):
        await registry.register_endpoint(NetworkServiceEndpoint(name="e1"))
    with pytest.raises(ValidationError, match="name"):
        await registry.register_service(NetworkService(name="bad name"))
    assert registry.endpoints == {} and registry.services == {}


async def test_watch_sends_snapshot_then_changes_with_deletions_flagged(registry, clock):
    await registry.register_endpoint(nse("e1", "s"))
    await registry.register_endpoint(nse("other", "t"))
    watch = registry.watch_endpoints(EndpointQuery(network_service_names=("s",)))
    try:
        await registry.register_endpoint(nse("e2", "s"))
        await registry.register_endpoint(nse("ignored", "t"))
        await registry.unregister_endpoint("e1")
        clock.advance(61)  # e2 expires
        events = [await asyncio.wait_for(anext(watch), 1) for _ in range(4)]
    finally:
        watch.close()
    assert [(e.item.name, e.deleted) for e in events] == [
        ("e1", False), ("e2", False), ("e1", True), ("e2", True)]
    assert len(registry.endpoint_watchers) == 0


async def test_service_watch(registry):
    watch = registry.watch_services(ServiceQuery(name="a"))
    try:
        await registry.register_service(NetworkService(name="b"))
        await registry.register_service(NetworkService(name="a"))
        await registry.unregister_service("a")
        events = [await asyncio.wait_for(anext(watch), 1) for _ in range(2)]
    finally:
        watch.close()
    assert [(e.item.name, e.deleted) for e in events] == [("a", False), ("a", True)]


async def test_everything_survives_a_restart(db, clock, tmp_path):
    reg = Registry(db, clock)
    await reg.register_service(NetworkService(name="a", payload="IP"))
    await reg.register_endpoint(nse("e1", "a", app="x"))
    reg.close()
    db.close()
    db2 = StateDB(str(tmp_path / "state"))
    reg2 = Registry(db2, clock)
    try:
        assert reg2.services["a"].payload == "IP"
        assert reg2.endpoints["e1"].labels_for("a") == {"app": "x"}
        clock.advance(61)  # expiry timers are re-armed from the stored times
        assert reg2.endpoints == {}
    finally:
        reg2.close()
        db2.close()


async def test_a_refresh_is_not_written_and_a_restart_grants_one_period(db, clock, tmp_path):
    reg = Registry(db, clock)
    await reg.register_endpoint(nse("e1", "a"))
    written = db.get("endpoints", "e1")
    clock.advance(40)
    await reg.register_endpoint(nse("e1", "a"))        # only the expiry moves: not written
    assert db.get("endpoints", "e1") == written
    await reg.register_endpoint(nse("e1", "a", "b"))   # a real change is
    assert db.get("endpoints", "e1")["network_service_names"] == ["a", "b"]
    reg.close()
    clock.advance(3600)                                  # the registry was down an hour
    again = Registry(db, clock)
    try:
        assert again.endpoints["e1"].expiration_time == clock.now + 60
        clock.advance(61)                                # ... and nobody re-registered it
        assert again.endpoints == {}
    finally:
        again.close()


async def test_a_mass_expiry_is_spread_over_loop_turns(registry, clock):
    for i in range(1200):
        await registry.register_endpoint(nse(f"e{i}", "a"))
    clock.now += 61
    assert len(registry.expire_due()) == 500   # one turn's share; the rest come next
    clock.advance(0)
    assert registry.endpoints == {}
