import asyncio
import logging

import pytest

from nsmd.errors import Conflict, ValidationError
from nsmd.hosting import Hosting
from nsmd.model import NetworkServiceEndpoint, ServiceLabels
from nsmd.model.endpoint_spec import EndpointSpec, Vl3Spec
from nsmd.registry import Registry
from nsmd.state import StateDB
from nsmd.testing.fake_clock import FakeClock
from nsmd.vl3 import subnets


def nse(name: str, subnet: str = "", service: str = "vl3") -> NetworkServiceEndpoint:
    labels = {subnets.SUBNET_LABEL: subnet} if subnet else {}
    return NetworkServiceEndpoint(name=name, network_service_names=[service],
                                  network_service_labels={service: ServiceLabels(labels)})


def vl3_spec(prefix="100.64.0.0/16", length=24) -> EndpointSpec:
    return EndpointSpec(netns="r", vl3=Vl3Spec(prefix=prefix, subnet_prefix_len=length))


def test_candidates_put_the_held_subnet_first_and_skip_taken_ones():
    found = subnets.candidates("10.0.0.0/22", 24, ["10.0.0.0/24", "10.0.2.0/23"], "10.0.1.0/24")
    assert list(found) == ["10.0.1.0/24"]
    assert list(subnets.candidates("10.0.0.0/23", 24, [], "")) == ["10.0.0.0/24", "10.0.1.0/24"]
    # a held subnet someone else took meanwhile is not offered
    assert list(subnets.candidates("10.0.0.0/23", 24, ["10.0.1.0/24"], "10.0.1.0/24")) == [
        "10.0.0.0/24"]


def test_overlapping_claims_conflict_and_name_the_holder():
    with pytest.raises(Conflict, match="held by endpoint 'a'"):
        subnets.check_unique(nse("b", "10.0.0.0/24"), [nse("a", "10.0.0.0/23")], "vl3")
    subnets.check_unique(nse("a", "10.0.0.0/24"), [nse("a", "10.0.0.0/24")], "vl3")  # itself
    subnets.check_unique(nse("b", "10.0.1.0/24"), [nse("a", "10.0.0.0/24")], "vl3")


def test_router_address_and_fit():
    assert subnets.router_address("100.64.3.0/24") == "100.64.3.1"
    assert subnets.fits("100.64.3.0/24", "100.64.0.0/16", 24)
    assert not subnets.fits("100.64.3.0/25", "100.64.0.0/16", 24)
    assert not subnets.fits("10.0.0.0/24", "100.64.0.0/16", 24)


@pytest.mark.parametrize("vl3, field", [
    (Vl3Spec(prefix="100.64.0.0/33"), "nsmd.vl3.prefix"),
    (Vl3Spec(prefix="100.64.0.0/16", subnet_prefix_len=16), "nsmd.vl3.subnet_prefix_len"),
    (Vl3Spec(prefix="100.64.0.0/16", subnet_prefix_len=31), "nsmd.vl3.subnet_prefix_len"),
])
def test_bad_vl3_specs_name_the_field(vl3, field):
    with pytest.raises(ValidationError) as err:
        EndpointSpec(vl3=vl3).validate()
    assert err.value.field == field


@pytest.fixture
async def env(tmp_path, monkeypatch):
    async def no_router(ns):  # router namespaces are tested in tests/integration/test_vl3.py
        return None

    monkeypatch.setattr("nsmd.vl3.router.prepare", no_router)
    monkeypatch.setattr("nsmd.netns.exists", lambda ns: True)
    clock = FakeClock()
    db = StateDB(str(tmp_path))
    registry = Registry(db, clock)
    yield clock, db, registry
    registry.close()
    db.close()


async def test_the_registry_refuses_a_subnet_another_endpoint_holds(env):
    _, _, registry = env
    await registry.register_endpoint(nse("a", "100.64.0.0/24"))
    with pytest.raises(Conflict):
        await registry.register_endpoint(nse("b", "100.64.0.0/24"))
    assert "b" not in registry.endpoints  # refused: nothing changed
    await registry.register_endpoint(nse("a", "100.64.0.0/24"))  # its own again: fine


async def test_endpoints_that_start_at_once_get_distinct_subnets(env, tmp_path, caplog):
    clock, db, registry = env
    caplog.set_level(logging.INFO, "nsmd.hosting")
    # several daemons on one registry, each with a view that does not know the others yet
    daemons = [Hosting(StateDB(str(tmp_path / f"d{i}")), registry, clock, f"unix:///d{i}")
               for i in range(4)]
    for d in daemons:
        d.registry = _Stale(registry)
    await asyncio.gather(*(d.apply(nse(f"e{i}"), vl3_spec()) for i, d in enumerate(daemons)))
    held = [registry.endpoints[f"e{i}"].labels_for("vl3")[subnets.SUBNET_LABEL]
            for i in range(4)]
    assert sorted(held) == [f"100.64.{i}.0/24" for i in range(4)]
    assert caplog.text.count("trying another subnet") >= 3  # they did collide
    assert [d.vl3_subnet(f"e{i}") for i, d in enumerate(daemons)] == held
    for d in daemons:
        d.close()


async def test_a_restarted_endpoint_keeps_its_subnet(env):
    clock, db, registry = env
    await registry.register_endpoint(nse("other", "100.64.0.0/24"))
    hosting = Hosting(db, registry, clock, "unix:///s")
    await hosting.apply(nse("e"), vl3_spec())
    assert hosting.vl3_subnet("e") == "100.64.1.0/24"
    hosting.close()
    await registry.unregister_endpoint("other")
    await registry.unregister_endpoint("e")  # expired while the daemon was down
    again = Hosting(db, registry, clock, "unix:///s")
    await again.start()
    assert again.vl3_subnet("e") == "100.64.1.0/24"  # not the free .0: its clients stay
    again.close()


async def test_no_free_subnet_is_a_clear_error(env):
    clock, db, registry = env
    await registry.register_endpoint(nse("a", "100.64.0.0/25"))
    await registry.register_endpoint(nse("b", "100.64.0.128/25"))
    hosting = Hosting(db, registry, clock, "unix:///s")
    with pytest.raises(Conflict, match="no free /25 subnet of 100.64.0.0/24"):
        await hosting.apply(nse("c"), vl3_spec("100.64.0.0/24", 25))
    hosting.close()


class _Stale:
    """A registry whose view shows no endpoints (a mirror that has not caught up): only
    the registry's own check keeps claims apart."""

    def __init__(self, registry):
        self._registry = registry
        self.endpoints = {}

    def endpoints_of(self, service):
        return []

    async def register_endpoint(self, nse, owner=None, keep=False):
        await asyncio.sleep(0)
        return await self._registry.register_endpoint(nse, owner, keep)
