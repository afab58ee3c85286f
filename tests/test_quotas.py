"""Quotas: the counts they are checked against, and what exceeding one raises."""

import pytest
from prometheus_client import CollectorRegistry, Counter

from nsmd.manager.held import Held
from nsmd.model import NetworkService, NetworkServiceEndpoint
from nsmd.quotas import Limits, QuotaExceeded, Quotas
from nsmd.registry.view import RegistryView
from nsmd.state import StateDB


def test_a_quota_refuses_one_more_names_itself_and_is_counted():
    refused = Counter("refused", "", ["quota"], registry=CollectorRegistry())
    quotas = Quotas(Limits(watches_per_peer=2, body_bytes=10), refused)
    quotas.check("connections-per-peer", 9_999, "peer")
    with pytest.raises(QuotaExceeded) as info:
        quotas.check("connections-per-peer", 10_000, "peer")
    assert info.value.status == 429 and info.value.to_json()["quota"] == "connections-per-peer"
    with quotas.hold("watches-per-peer", "a"), quotas.hold("watches-per-peer", "a"):
        with pytest.raises(QuotaExceeded, match="watches-per-peer"):
            with quotas.hold("watches-per-peer", "a"):
                pass
        with quotas.hold("watches-per-peer", "b"):   # per peer
            pass
    with quotas.hold("watches-per-peer", "a"):       # released when the streams ended
        pass
    quotas.check_size("body-bytes", 10, "u")
    for size in (11, None):
        with pytest.raises(QuotaExceeded, match="body-bytes"):
            quotas.check_size("body-bytes", size, "u")
    assert refused.labels("watches-per-peer")._value.get() == 1
    assert refused.labels("body-bytes")._value.get() == 2


def test_records_are_counted_per_registrant_through_updates_and_removals():
    view = RegistryView()
    view._put_service(NetworkService(name="s1", path_ids=["spiffe://t/a"]))
    view._put_service(NetworkService(name="s1", path_ids=["spiffe://t/a"]))  # an update
    view._put_endpoint(NetworkServiceEndpoint(name="e1", network_service_names=["s1"],
                                              path_ids=["spiffe://t/a"]))
    view._put_endpoint(NetworkServiceEndpoint(name="e2", network_service_names=["s1"],
                                              path_ids=["spiffe://t/b"]))
    assert (view.records_of("spiffe://t/a"), view.records_of("spiffe://t/b")) == (2, 1)
    view._drop_endpoint(view.endpoints["e1"])
    view._drop_service(view.services["s1"])
    assert (view.records_of("spiffe://t/a"), view.records_of("spiffe://t/b")) == (0, 1)


def test_held_connections_are_counted_per_local_user(tmp_path):
    held = Held(StateDB(str(tmp_path)))
    held.own("c1", ["unix:uid=1000", "unix:gid=1000"])
    held.own("c2", ["unix:uid=1000"])
    held.own("c3", [])                     # this daemon's own
    held.own("c1", ["unix:uid=1000"])      # owned again: still one
    assert held.held_by("unix:uid=1000") == 2
    held.disown("c2")
    held.forget("c1")
    assert held.held_by("unix:uid=1000") == 0
