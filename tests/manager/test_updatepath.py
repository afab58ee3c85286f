import pytest

from nsmd.errors import ValidationError
from nsmd.manager.chain import Chain
from nsmd.manager.updatepath import UpdatePath, update_path
from nsmd.model import Path, PathSegment
from nsmd.testing.elements import Checks


def segments(path):
    return [(s.name, s.id) for s in path.path_segments]


def test_empty_path_gets_our_segment_with_the_connection_id():
    path = Path()
    assert update_path(path, "c1", "nsc") == 0
    assert segments(path) == [("nsc", "c1")]


def test_our_current_segment_is_reused_on_refresh():
    path = Path(1, [PathSegment("nsc", "a"), PathSegment("mgr", "b")])
    assert update_path(path, "b", "mgr") == 1
    assert segments(path) == [("nsc", "a"), ("mgr", "b")]


def test_next_hop_appends_or_reuses_its_segment():
    path = Path(0, [PathSegment("nsc", "a")])
    assert update_path(path, "a", "mgr") == 0
    assert path.index == 1 and path.path_segments[1].name == "mgr"
    new_id = path.path_segments[1].id
    path.index = 0
    assert update_path(path, "a", "mgr") == 0
    assert path.path_segments[1].id == new_id  # reused: same name at the next index


def test_a_different_next_hop_replaces_the_rest_of_the_path():
    path = Path(1, [PathSegment("nsc", "a"), PathSegment("mgr", "b"), PathSegment("nse-1", "c")])
    update_path(path, "b", "nse-2")
    assert [s.name for s in path.path_segments] == ["nsc", "mgr", "nse-2"]
    assert path.path_segments[2].id != "c"


def test_a_connection_id_that_is_not_the_current_segment_is_refused():
    path = Path(0, [PathSegment("nsc", "a")])
    with pytest.raises(ValidationError, match="connection.id"):
        update_path(path, "zzz", "mgr")


async def test_the_element_gives_each_hop_its_id_and_restores_the_caller_view(make_request):
    seen = []
    chain = Chain(UpdatePath("mgr"), Checks(on_request=lambda r: seen.append(
        (r.connection.id, r.connection.path.index))), UpdatePath("nse"),
        Checks(on_request=lambda r: seen.append((r.connection.id, r.connection.path.index))))
    conn = await chain.request(make_request("c0"))
    mgr_id, nse_id = conn.path.path_segments[1].id, conn.path.path_segments[2].id
    assert seen == [(mgr_id, 1), (nse_id, 2)]
    assert (conn.id, conn.path.index) == ("c0", 0)
