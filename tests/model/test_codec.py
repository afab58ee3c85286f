import datetime as dt

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nsmd.errors import ValidationError
from nsmd.model import (
    Connection,
    Match,
    NetworkService,
    NetworkServiceEndpoint,
    NetworkServiceRequest,
    from_wire,
    to_wire,
)
from nsmd.model.codec import format_time


def sample_connection() -> Connection:
    return from_wire(Connection, {
        "id": "c1", "network_service": "icmp-responder", "labels": {"app": "nsc"},
        "mechanism": {"cls": "LOCAL", "type": "KERNEL", "parameters": {"name": "nsm0"}},
        "context": {"ip_context": {"src_ip_addrs": ["169.254.0.2/32"],
                                   "src_routes": [{"prefix": "169.254.0.1/32", "nextHop": ""}]},
                    "MTU": 1500},
        "path": {"index": 1, "path_segments": [
            {"name": "nsc", "id": "c0", "expires": "2027-01-01T00:00:00Z"},
            {"name": "node", "id": "c1", "metrics": {"rx_packets": "3"}}]},
        "network_service_endpoint_name": "nse-1", "payload": "IP", "state": "UP"})


def test_json_and_msgpack_round_trips_keep_every_field():
    conn = sample_connection()
    wire = to_wire(conn)
    assert from_wire(Connection, wire) == conn
    assert from_wire(Connection, msgpack.unpackb(msgpack.packb(wire))) == conn
    assert wire["context"]["MTU"] == 1500
    assert wire["context"]["ip_context"]["src_routes"] == [
        {"prefix": "169.254.0.1/32", "nextHop": ""}]
    assert wire["path"]["path_segments"][0]["expires"] == "2027-01-01T00:00:00.000000Z"


def test_timestamps_accept_epoch_seconds_and_rfc3339():
    a = from_wire(NetworkServiceEndpoint, {"name": "x", "expiration_time": 1800000000})
    b = from_wire(NetworkServiceEndpoint, {"name": "x",
                                           "expiration_time": "2027-01-15T08:00:00Z"})
    assert a.expiration_time == 1800000000.0
    assert b.expiration_time == 1800000000.0


@given(st.one_of(st.floats(1e-6, 253402300799.0),
                 # the edges where microseconds round up into the next second
                 st.integers(1, 2**33).map(lambda s: s + 0.9999995),
                 st.integers(1, 2**33).map(lambda s: s - 0.0000005)))
def test_timestamps_are_written_as_datetime_writes_them(seconds):
    """format_time caches the date and time of day by whole second: it must still write
    exactly what datetime's isoformat does, rounding included."""
    expected = dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="microseconds")
    assert format_time(seconds) == expected.replace("+00:00", "Z")


def test_fields_keep_their_values_not_the_models_lists():
    nse = from_wire(NetworkServiceEndpoint, {
        "name": "x", "network_service_names": ["a"], "path_ids": ["p"],
        "network_service_labels": {"a": {"labels": {"zone": "z"}}}})
    wire = to_wire(nse)
    assert wire["network_service_names"] == ["a"]
    assert wire["network_service_labels"] == {"a": {"labels": {"zone": "z"}}}
    wire["network_service_names"].append("b")         # plain data of its own
    wire["network_service_labels"]["a"]["labels"]["zone"] = "y"
    assert nse.network_service_names == ["a"] and nse.labels_for("a") == {"zone": "z"}


@pytest.mark.parametrize("data, field, expected", [
    ({"matches": [{"routes": "x"}]}, "matches[0].routes", "a list"),
    ({"matches": [{"source_selector": {"app": 1}}]}, "matches[0].source_selector.app",
     "a string"),
    ({"payload": "L7"}, "payload", "one of IP, ETHERNET"),
    ({"matches": [{"fallthrough": "yes"}]}, "matches[0].fallthrough", "true or false"),
    ({"matchez": []}, "matchez", "known fields"),
])
def test_validation_errors_name_the_field_and_the_expectation(data, field, expected):
    with pytest.raises(ValidationError) as err:
        from_wire(NetworkService, {"name": "svc", **data})
    assert err.value.field == field
    assert expected in str(err.value)
    assert err.value.to_json()["field"] == field


def test_null_yaml_values_mean_empty():
    match = from_wire(Match, {"source_selector": None, "routes": None})
    assert match.source_selector == {} and match.routes == []


def test_request_decodes_nested_mechanism_preferences():
    req = from_wire(NetworkServiceRequest, {
        "connection": {"network_service": "s"},
        "mechanism_preferences": [{"cls": "LOCAL", "type": "KERNEL"}]})
    assert req.mechanism_preferences[0].type == "KERNEL"
    with pytest.raises(ValidationError) as err:
        from_wire(NetworkServiceRequest, {"mechanism_preferences": [{"cls": "NEAR"}]})
    assert err.value.field == "mechanism_preferences[0].cls"


def test_state_must_be_one_of_nsm_states():
    with pytest.raises(ValidationError, match="state"):
        from_wire(Connection, {"state": "SIDEWAYS"})
