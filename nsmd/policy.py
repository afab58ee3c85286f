"""Authorization policies as data: who may request a network service, and who may register
it or its endpoints (`nsmd run --policy FILE`, YAML).

    services:                        # first rule whose name matches wins
      - name: secure-*               # a service name, or a glob
        request: [spiffe://example.org/node/a, "unix:uid=0"]
        register: [spiffe://example.org/node/b]
    default:                         # services no rule names; a rule's missing list too
      request: ["*"]
      register: ["*"]

Subjects are SPIFFE IDs (peer daemons) and `unix:uid=N` / `unix:gid=N` (local callers on
the API socket), each exact or a glob (`spiffe://example.org/node/*`, `*`). Without a file
everything is allowed that the built-in policies allow (see docs/security.md), to peers
of this daemon's own trust domain: a peer (or a path's origin) of a federated trust
domain passes only a subject that names its trust domain (`spiffe://other.org/...`),
never `*` nor the absence of a file. This daemon acting for a caller it already checked
(refresh, heal) is not checked again. SIGHUP reads the file again; a file that does not
parse leaves the one in force.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re

import yaml

from nsmd.caller import Caller
from nsmd.errors import PermissionDenied, ValidationError

ACTIONS = ("request", "register")
ANYONE = ("*",)
_SUBJECT = re.compile(r"^(\*|spiffe://\S+|unix:(uid|gid)=(\d+|\*))$")


@dataclasses.dataclass(frozen=True)
class Rule:
    name: str                       # what it is called in denials: services[0], default
    service: str                    # glob of service names ("*" for default)
    lists: dict[str, tuple[str, ...]]

    def allows(self, action: str, caller: Caller, foreign: str = "") -> bool:
        """Whether a subject of `caller` matches the list; for a peer of `foreign` (another
        trust domain) only subjects that name that trust domain count."""
        patterns = self.lists[action]
        if foreign:
            patterns = tuple(p for p in patterns if p.startswith(f"spiffe://{foreign}/"))
        return any(fnmatch.fnmatchcase(s, p) for p in patterns for s in caller.subjects)


class Policy:
    def __init__(self, rules: list[Rule], default: Rule, source: str = "built-in"):
        self.rules = rules
        self.default = default
        self.source = source
        self.home = ""  # this daemon's trust domain: peers of others must be named

    @classmethod
    def allow_all(cls) -> Policy:
        return cls([], Rule("default", "*", {a: ANYONE for a in ACTIONS}))

    @classmethod
    def load(cls, path: str) -> Policy:
        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f)
        except OSError as err:
            raise ValidationError("policy", "a readable YAML file", path,
                                  detail=f"policy {path}: {err.strerror}") from None
        except yaml.YAMLError as err:
            raise ValidationError("policy", "valid YAML",
                                  detail=f"policy {path}: not valid YAML ({err})") from None
        return cls.parse(data, path)

    @classmethod
    def parse(cls, data: object, source: str) -> Policy:
        where = f"policy {source}: "
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ValidationError(f"{where}(top level)", "a mapping with services and default")
        _no_unknown(data, ("services", "default"), where)
        default_doc = {} if data.get("default") is None else data["default"]
        if not isinstance(default_doc, dict):
            raise ValidationError(f"{where}default", "a mapping with request and register")
        _no_unknown(default_doc, ACTIONS, f"{where}default.")
        default = Rule("default", "*", {
            a: _subjects(default_doc.get(a, list(ANYONE)), f"{where}default.{a}")
            for a in ACTIONS})
        services = [] if data.get("services") is None else data["services"]
        if not isinstance(services, list):
            raise ValidationError(f"{where}services", "a list of rules")
        rules = []
        for i, doc in enumerate(services):
            at = f"{where}services[{i}]"
            if not isinstance(doc, dict):
                raise ValidationError(at, "a mapping with name, request, register")
            _no_unknown(doc, ("name", *ACTIONS), f"{at}.")
            name = doc.get("name")
            if not isinstance(name, str) or not name:
                raise ValidationError(f"{at}.name", "a service name or glob", name)
            rules.append(Rule(f"services[{i}]", name, {
                a: _subjects(doc[a], f"{at}.{a}") if a in doc else default.lists[a]
                for a in ACTIONS}))
        return cls(rules, default, source)

    def adopt(self, other: Policy) -> None:
        """Takes `other`'s rules in place (SIGHUP): every holder of this object sees them
        from the next check on."""
        self.rules, self.default, self.source = other.rules, other.default, other.source

    def rule_for(self, service: str) -> Rule:
        for rule in self.rules:
            if fnmatch.fnmatchcase(service, rule.service):
                return rule
        return self.default

    def check(self, action: str, service: str, caller: Caller) -> None:
        """Raises PermissionDenied naming the rule unless `caller` may `action` `service`."""
        if caller.kind == "daemon":
            return
        rule = self.rule_for(service)
        foreign = _trust_domain(caller.spiffe_id) if caller.kind == "peer" else ""
        if foreign == self.home or not self.home:
            foreign = ""
        if not rule.allows(action, caller, foreign):
            why = f" (no subject names its federated trust domain {foreign})" if foreign else ""
            raise PermissionDenied(rule.name, f"{caller} may not {action} network service "
                                   f"{service!r}{why} (policy {self.source})")


def _trust_domain(spiffe_id: str) -> str:
    return spiffe_id.removeprefix("spiffe://").split("/", 1)[0]


def _no_unknown(doc: dict, known: tuple[str, ...], where: str) -> None:
    for key in doc:
        if key not in known:
            raise ValidationError(f"{where}{key}", f"one of {', '.join(known)}",
                                  detail=f"{where}{key}: unknown key (expected one of "
                                  f"{', '.join(known)})")


def _subjects(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValidationError(where, "a list of subjects (SPIFFE IDs or unix:uid=N / "
                              "unix:gid=N, globs allowed)", value)
    for i, item in enumerate(value):
        if not isinstance(item, str) or not _SUBJECT.match(item):
            raise ValidationError(f"{where}[{i}]", "a SPIFFE ID (spiffe://...), unix:uid=N, "
                                  "unix:gid=N or *", item)
    return tuple(value)
