"""firewall: ordered allow/deny rules on what the client sends, replies of allowed flows
pass, per-rule counters (stage.pyx does the packet work).

    config:
      default: deny                     # allow | deny (also for unsolicited endpoint traffic)
      rules:                            # first match wins
        - {action: allow, proto: icmp}
        - {action: allow, proto: tcp, ports: "8080,9000-9100", dst: 0.0.0.0/0}
        - {action: deny, proto: tcp, ports: "80"}
      # or: nsm_acl_file: PATH          # NSM's ACL config (VPP field names), unchanged

A rule matches on `proto` (any, tcp, udp, icmp (v4 or v6), icmpv6, or a number),
`src`/`dst` prefixes and destination `ports` (tcp/udp). NSM's ACL file is the
`config.yaml` of the composition example (or the ConfigMap that carries it): a map of
rule names to `ispermit`, `proto`, `srcprefix`, `dstprefix`,
`srcportoricmptype{first,last}`, `dstportoricmpcode{first,last}`; VPP's semantics (a
missing `last` is 0; proto 0 ignores ports; no match denies).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

import yaml

from nsmd.errors import ValidationError
from nsmd.model import Connection
from nsmd.model.codec import field
from nsmd.plugins.api import Function, VWireFunction, check_seconds

PROTOCOLS = {"any": 0, "tcp": 6, "udp": 17, "icmp": 256, "icmpv6": 58}
ANY_ICMP = 256
ACL_FIELDS = ("ispermit", "proto", "srcprefix", "dstprefix", "srcportoricmptypefirst",
              "srcportoricmptypelast", "dstportoricmpcodefirst", "dstportoricmpcodelast",
              "tcpflagsmask", "tcpflagsvalue")
MAX_RANGES = 16


@dataclasses.dataclass
class RuleConfig:
    action: str = field(default="allow", choices=("allow", "deny"))
    proto: Any = "any"
    src: str = ""
    dst: str = ""
    ports: Any = ""


@dataclasses.dataclass
class Config:
    default: str = field(default="deny", choices=("allow", "deny"))
    rules: list[RuleConfig] = field(default_factory=list)
    nsm_acl_file: str = ""
    tcp_timeout_s: float = 300.0
    udp_timeout_s: float = 60.0
    other_timeout_s: float = 30.0


class Firewall(Function):
    name = "firewall"
    Config = Config

    def check(self) -> None:
        cfg, at = self.config, f"{self.where}.config"
        if cfg.nsm_acl_file and cfg.rules:
            raise ValidationError(f"{at}.nsm_acl_file", "either rules or nsm_acl_file, not both")
        check_seconds(cfg, self.where, "tcp_timeout_s", "udp_timeout_s", "other_timeout_s")
        if cfg.nsm_acl_file:
            self.rules = read_nsm_acl(cfg.nsm_acl_file, f"{at}.nsm_acl_file")
            self.default_allow = False  # VPP ACLs deny what no rule permits
        else:
            self.rules = [compile_rule(r, f"{at}.rules[{i}]") for i, r in enumerate(cfg.rules)]
            self.default_allow = cfg.default == "allow"

    def attach(self, conn: Connection) -> VWireFunction:
        from nsmd.plugins.firewall.stage import FirewallStage

        cfg = self.config
        return FirewallStage(self.rules, self.default_allow, cfg.tcp_timeout_s,
                             cfg.udp_timeout_s, cfg.other_timeout_s)

    def describe(self) -> dict[str, Any]:
        return {"rules": len(self.rules), "default": "allow" if self.default_allow else "deny"}


def compile_rule(rule: RuleConfig, where: str) -> dict:
    proto = _proto(rule.proto, f"{where}.proto")
    src, dst = _prefix(rule.src, f"{where}.src"), _prefix(rule.dst, f"{where}.dst")
    ranges = _ports(rule.ports, f"{where}.ports")
    if ranges and proto not in (6, 17):
        raise ValidationError(f"{where}.ports", "ports only with proto tcp or udp", rule.ports)
    return _rule(rule.action == "allow", proto, src, dst, (0, 0xFFFF), ranges, where)


def read_nsm_acl(path: str, where: str) -> list[dict]:
    """NSM's ACL rules (cmd-nse-firewall-vpp's config file) in the order written."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except OSError as err:
        raise ValidationError(where, "a readable NSM ACL file", path,
                              detail=f"{where}: {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ValidationError(where, "YAML", detail=f"{where}: {path}: not valid YAML ({err})"
                              ) from None
    if isinstance(doc, dict) and doc.get("kind") == "ConfigMap":
        inner = (doc.get("data") or {}).get("config.yaml")
        if not isinstance(inner, str):
            raise ValidationError(where, "a ConfigMap with data.config.yaml", path)
        doc = yaml.safe_load(inner)
    if not isinstance(doc, dict) or not doc:
        raise ValidationError(where, "a map of rule names to ACL rules", path)
    rules = []
    for name, raw in doc.items():
        at = f"{where}: {path}: rule {name!r}"
        if not isinstance(raw, dict):
            raise ValidationError(at, "a mapping of VPP ACL fields", raw)
        for key in raw:
            if key not in ACL_FIELDS:
                raise ValidationError(f"{at}.{key}", f"one of {', '.join(ACL_FIELDS)}")
        values = {key: _uint(raw.get(key, 0), f"{at}.{key}", 0xFFFF if "port" in key or
                             "flags" in key else 255) for key in ACL_FIELDS if "prefix" not in key}
        if values["tcpflagsmask"] or values["tcpflagsvalue"]:
            raise ValidationError(f"{at}.tcpflagsmask", "0 (TCP flag matches are not supported)")
        proto = values["proto"]
        sports = (values["srcportoricmptypefirst"], values["srcportoricmptypelast"])
        dports = (values["dstportoricmpcodefirst"], values["dstportoricmpcodelast"])
        if proto == 0:  # VPP ignores ports without a protocol
            sports, ranges = (0, 0xFFFF), []
        else:
            ranges = [dports]
        rules.append(_rule(values["ispermit"] > 0, proto,
                           _prefix(raw.get("srcprefix", ""), f"{at}.srcprefix"),
                           _prefix(raw.get("dstprefix", ""), f"{at}.dstprefix"),
                           sports, ranges, at))
    return rules


def _rule(allow: bool, proto: int, src, dst, sports: tuple[int, int],
          ranges: list[tuple[int, int]], where: str) -> dict:
    families = {net.version for net in (src, dst) if net is not None}
    if len(families) > 1:
        raise ValidationError(where, "src and dst of one address family")
    if sports[0] > sports[1] or any(lo > hi for lo, hi in ranges):
        raise ValidationError(where, "port ranges whose first is not above their last")
    return {"allow": allow, "proto": proto, "family": families.pop() if families else 0,
            "src": src.network_address.packed if src else b"",
            "dst": dst.network_address.packed if dst else b"",
            "src_bits": src.prefixlen if src else 0, "dst_bits": dst.prefixlen if dst else 0,
            "sports": sports, "ranges": ranges}


def _proto(value: Any, where: str) -> int:
    if isinstance(value, str) and value.lower() in PROTOCOLS:
        return PROTOCOLS[value.lower()]
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255:
        return value
    raise ValidationError(where, "any, tcp, udp, icmp, icmpv6 or a protocol number", value)


def _prefix(value: Any, where: str):
    if value in ("", None):
        return None
    try:
        net = ipaddress.ip_network(str(value), strict=False)
    except ValueError:
        raise ValidationError(where, "an address prefix like 10.0.0.0/8", value) from None
    return None if net.prefixlen == 0 else net


def _ports(value: Any, where: str) -> list[tuple[int, int]]:
    if value in ("", None):
        return []
    ranges = []
    for part in str(value).split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi if sep else lo)
        except ValueError:
            raise ValidationError(where, "ports like \"80\" or \"8080,9000-9100\"",
                                  value) from None
        if not 0 <= first <= last <= 0xFFFF:
            raise ValidationError(where, "port ranges within 0-65535", value)
        ranges.append((first, last))
    if len(ranges) > MAX_RANGES:
        raise ValidationError(where, f"at most {MAX_RANGES} ranges", value)
    return ranges


def _uint(value: Any, where: str, limit: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise ValidationError(where, f"an integer 0-{limit}", value)
    return value
