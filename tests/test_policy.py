import pytest

from nsmd.caller import DAEMON, Caller
from nsmd.errors import PermissionDenied, ValidationError
from nsmd.policy import Policy

A = "spiffe://example.org/node/a"
ALICE = Caller("local", uid=1000, gids=(1000, 27))
ROOT = Caller("local", uid=0, gids=(0,))


def peer(spiffe_id: str) -> Caller:
    return Caller("peer", spiffe_id=spiffe_id)


POLICY = """
services:
  - name: db-*
    request: ["spiffe://example.org/node/*", "unix:gid=27"]
    register: [spiffe://example.org/node/db]
  - name: open
default:
  request: ["unix:uid=0", spiffe://example.org/node/a]
"""


def test_first_matching_rule_wins_with_globs_uids_and_groups(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    policy = Policy.load(str(path))
    policy.check("request", "db-main", peer(A))
    policy.check("request", "db-main", ALICE)          # through her supplementary group 27
    with pytest.raises(PermissionDenied) as info:
        policy.check("register", "db-main", peer(A))
    assert info.value.policy == "services[0]"
    assert "may not register network service 'db-main'" in str(info.value)
    assert str(path) in str(info.value)
    # a rule without a list takes default's; a service no rule names gets default
    policy.check("request", "open", ROOT)
    with pytest.raises(PermissionDenied, match="services\\[1\\]"):
        policy.check("request", "open", ALICE)
    with pytest.raises(PermissionDenied, match="default"):
        policy.check("request", "other", peer("spiffe://example.org/node/b"))
    policy.check("register", "other", ALICE)           # default register: anyone
    policy.check("request", "db-main", DAEMON)         # this daemon acting for a caller


def test_without_a_file_everything_is_allowed():
    Policy.allow_all().check("request", "x", peer(A))
    Policy.allow_all().check("register", "x", ALICE)


@pytest.mark.parametrize("doc, field", [
    ("services: {}", "services"),
    ("services: [{request: ['*']}]", "services[0].name"),
    ("services: [{name: x, request: 'spiffe://a/b'}]", "services[0].request"),
    ("services: [{name: x, request: [root]}]", "services[0].request[0]"),
    ("services: [{name: x, allow: ['*']}]", "services[0].allow"),
    ("default: {request: [unix:uid=alice]}", "default.request[0]"),
    ("rules: []", "rules"),
    ("[1, 2]", "(top level)"),
])
def test_bad_policies_name_the_field(tmp_path, doc, field):
    path = tmp_path / "p.yaml"
    path.write_text(doc)
    with pytest.raises(ValidationError) as info:
        Policy.load(str(path))
    assert info.value.field == f"policy {path}: {field}", str(info.value)


def test_unreadable_and_broken_files_are_one_clear_error(tmp_path):
    with pytest.raises(ValidationError, match="No such file"):
        Policy.load(str(tmp_path / "none.yaml"))
    (tmp_path / "bad.yaml").write_text("services: [")
    with pytest.raises(ValidationError, match="not valid YAML"):
        Policy.load(str(tmp_path / "bad.yaml"))


def test_a_federated_trust_domain_passes_only_where_a_subject_names_it():
    from nsmd.caller import Caller

    own, other = Caller("peer", spiffe_id="spiffe://a.test/n"), \
        Caller("peer", spiffe_id="spiffe://b.test/n")
    for policy in (Policy.allow_all(),
                   Policy.parse({"default": {"request": ["*", "spiffe://*"]}}, "p")):
        policy.home = "a.test"
        policy.check("request", "svc", own)
        with pytest.raises(PermissionDenied, match="federated trust domain b.test"):
            policy.check("request", "svc", other)
    named = Policy.parse({"services": [{"name": "svc", "request": ["spiffe://b.test/*"]}]},
                         "p")
    named.home = "a.test"
    named.check("request", "svc", other)
    with pytest.raises(PermissionDenied, match=r"services\[0\]"):
        named.check("register", "svc", other)   # named for requests, not registrations
