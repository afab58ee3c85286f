import pytest

from nsmd.caller import peer_caller


@pytest.mark.parametrize(("said", "kept"), [
    ("https://192.0.2.1:7000", True),
    ("https://192.0.2.1:7000/", True),
    ("https://192.0.2.9:7000", False),        # not where the connection came from
    ("http://192.0.2.1:7000", False),         # notices go over mTLS only
    ("https://192.0.2.1", False),             # no port
    ("https://192.0.2.1:99999", False),       # bad port
    ("https://192.0.2.1:7000/v1/x", False),   # a base URL, nothing more
    ("", False),
])
def test_a_peer_s_url_is_kept_only_on_its_own_address(said, kept):
    caller = peer_caller(None, "spiffe://test.nsmd/node/n1", "192.0.2.1", said)
    assert caller.url == (said if kept else "")
