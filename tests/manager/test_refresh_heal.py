import pytest

from nsmd.manager.begin import Begin
from nsmd.manager.chain import Chain, Element
from nsmd.manager.heal import Heal
from nsmd.manager.held import Held
from nsmd.manager.refresh import Refresh, refresh_delay
from nsmd.manager.updatetoken import UpdateToken
from nsmd.model import Connection, Path, PathSegment
from nsmd.state import StateDB
from nsmd.testing.elements import Count, InjectError


class PickEndpoint(Element):
    """Stands in for discover and ipam: names an endpoint unless the request already has
    one, and hands out the addresses the request carries, or new ones."""

    def __init__(self):
        self.picked = 0
        self.carried: list[list[str]] = []   # the client addresses each request carried

    async def request(self, request, nxt):
        conn = request.connection
        if not conn.network_service_endpoint_name:
            self.picked += 1
            conn.network_service_endpoint_name = f"nse-{self.picked}"
        ipc = conn.context.ip_context
        self.carried.append(list(ipc.src_ip_addrs))
        ipc.src_ip_addrs = ipc.src_ip_addrs or [f"100.64.0.{len(self.carried)}/32"]
        return await nxt.request(request)


class Probe:
    """The data-plane probe: dead (a reason) or alive (None), as the test says."""

    def __init__(self, verdicts=()):
        self.verdicts = list(verdicts)
        self.asked = 0

    def __call__(self, conn):
        self.asked += 1
        return self.verdicts.pop(0) if len(self.verdicts) > 1 else \
            (self.verdicts[0] if self.verdicts else None)


def build(clock, failures=(), probe=None, extra=()):
    begin = Begin()
    heal = Heal(clock, begin, probe or Probe())
    refresh = Refresh(clock, begin, heal)
    count, pick = Count(), PickEndpoint()
    inject = InjectError(fail_requests=set(failures))
    chain = Chain(heal, begin, UpdateToken(clock, 600), *extra, refresh, pick, inject, count)
    return chain, begin, refresh, heal, count, pick


def test_refresh_points_are_nsm_s():
    def conn(index, *expires):
        return Connection(path=Path(index, [PathSegment(expires=e) for e in expires]))

    assert refresh_delay(conn(0, 1090), 1000) == pytest.approx(30)        # 1/3, one segment
    assert refresh_delay(conn(0, 1090, 1060), 1000) == pytest.approx(12)  # 0.2 of the least
    assert refresh_delay(conn(1, 0, 1100, 1100, 1100), 1000) == pytest.approx(25)  # 0.25
    assert refresh_delay(Connection(path=Path(0, [PathSegment()])), 1000) is None


async def test_connections_are_refreshed_at_one_third_of_their_lifetime(clock, make_request):
    chain, begin, refresh, heal, count, _ = build(clock)
    await chain.request(make_request("c1"))
    assert refresh.armed()["c1"] == clock.now + 200
    await clock.run(199)
    assert count.requests == 1
    await clock.run(1)
    assert count.requests == 2
    assert refresh.armed()["c1"] == clock.now + 200  # re-armed from the new expiry
    await chain.close(begin.get("c1"))
    assert refresh.armed() == {}


async def test_control_plane_down_data_plane_alive_restores_the_same_path(clock, make_request):
    chain, begin, refresh, heal, count, pick = build(clock, failures={1, 2, 3})
    first = await chain.request(make_request("c1"))
    await clock.run(200)          # the refresh fails, heal restores: fails twice more
    assert heal.healing() == {"c1"} and count.requests == 1
    await clock.run(0.2 + 0.4 + 0.01)  # retries 200 ms apart, growing
    conn = begin.get("c1")
    assert heal.healing() == set() and heal.healed == {"restore": 1, "reselect": 0}
    assert conn.state == "UP" and conn.network_service_endpoint_name == "nse-1"
    assert conn.context.ip_context.src_ip_addrs == first.context.ip_context.src_ip_addrs
    assert count.closes == 0 and pick.picked == 1   # nothing torn down, nothing reselected


async def test_data_plane_dead_reselects_keeping_the_client_s_addresses(clock, make_request):
    probe = Probe(["endpoint host silent for 2.5 s"])
    chain, begin, refresh, heal, count, pick = build(clock, failures={1}, probe=probe)
    first = await chain.request(make_request("c1"))
    await clock.run(200)
    conn = begin.get("c1")
    assert conn.network_service_endpoint_name == "nse-2" and conn.state == "UP"
    assert count.closes == 1                      # the old path was closed first
    assert pick.carried[-1] == first.context.ip_context.src_ip_addrs  # offered back
    assert heal.healed == {"restore": 0, "reselect": 1}


async def test_a_restore_turns_into_a_reselect_when_the_data_plane_dies(clock, make_request):
    probe = Probe([None, None, "endpoint device failed"])
    chain, begin, refresh, heal, count, pick = build(clock, failures={1, 2, 3}, probe=probe)
    await chain.request(make_request("c1"))
    await clock.run(200 + 0.2 + 0.4 + 0.01)
    assert begin.get("c1").network_service_endpoint_name == "nse-2"
    assert heal.healed == {"restore": 0, "reselect": 1} and probe.asked == 3


async def test_heal_retries_on_the_daemon_s_clock_until_a_reselect_succeeds(clock,
                                                                           make_request):
    chain, begin, refresh, heal, count, pick = build(clock, failures={1, 2},
                                                     probe=Probe(["dead"]))
    await chain.request(make_request("c1"))
    heal.start("c1")
    heal.start("c1")  # already healing: no second task
    await clock.run(0)
    assert pick.picked == 2 and heal.healing() == {"c1"}
    await clock.run(0.19)
    assert pick.picked == 2                   # no retry before 200 ms
    await clock.run(0.01)
    assert pick.picked == 3
    await clock.run(0.41)                     # then 400 ms
    assert begin.get("c1").state == "UP" and pick.picked == 4 and heal.healing() == set()


async def test_closing_stops_healing(clock, make_request):
    chain, begin, refresh, heal, count, pick = build(clock, failures=set(range(1, 100)))
    await chain.request(make_request("c1"))
    heal.start("c1")
    await clock.run(1)
    await chain.close(begin.get("c1"))
    await clock.run(5)
    assert heal.healing() == set() and begin.get("c1") is None
    assert count.requests <= 6


async def test_a_reselect_keeps_the_connection_held(clock, make_request, tmp_path):
    db = StateDB(str(tmp_path))
    held = Held(db)
    chain, begin, refresh, heal, count, pick = build(clock, failures={1},
                                                     probe=Probe(["dead"]), extra=(held,))
    await chain.request(make_request("c1"))
    await clock.run(200)   # refresh fails; the reselect closes the old path, then requests
    assert begin.get("c1").network_service_endpoint_name == "nse-2"
    assert [r.connection.network_service_endpoint_name for r, _ in held.stored()] == ["nse-2"]
    await chain.close(begin.get("c1"))
    assert held.stored() == []
    db.close()
