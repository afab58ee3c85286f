"""The daemon's configuration: defaults < TOML file < NSMD_* environment < command line.

Frozen once loaded; each value is checked where it is read, with the option's name in the
error.
"""

from __future__ import annotations

import dataclasses
import functools
import grp
import ipaddress
import os
import socket
import tomllib
from collections.abc import Mapping
from typing import Any

from nsmd import defaults
from nsmd.errors import ValidationError
from nsmd.quotas import Limits

# Rekeys must come well before the engine refuses a keypair (fastpath REJECT_AFTER_S, 180 s).
REKEY_LIMIT_S = 150.0
ENV_PREFIX = "NSMD_"
_BOOLS = {"1": True, "true": True, "yes": True, "on": True,
          "0": False, "false": False, "no": False, "off": False}


def option(default: Any, help: str, metavar: str = "", *, flag: bool = True,
           choices: tuple[str, ...] = (), repeat: bool = False, **field: Any) -> Any:
    """One option of `nsmd run`, declared once: its default, its --help line and how the
    command line takes it; the TOML file, NSMD_<OPTION> variables, --help, the tuning
    epilog and the installed nsmd.toml are all made from this (nsmd/cli/options.py).
    flag=False: a tuning option (TOML and NSMD_* only); repeat: a repeatable flag whose
    values join with commas."""
    meta = {"help": help, "metavar": metavar, "flag": flag, "choices": choices,
            "repeat": repeat}
    if "default_factory" in field:
        return dataclasses.field(metadata=meta, **field)
    return dataclasses.field(default=default, metadata=meta, **field)


@dataclasses.dataclass(frozen=True)
class Config:
    name: str = option(None, "node name in path segments (default: the hostname)",
                       default_factory=socket.gethostname)
    state_dir: str = option(defaults.STATE_DIR, "registry, connections and keys", "DIR")
    api_socket: str = option(defaults.API_SOCKET, "unix socket of the API", "PATH")
    listen: str = option("", "mTLS listener for peer daemons; tunnels use the same IP "
                         "(none: no peers)", "IP:PORT")
    advertise: str = option("", "the address peers and tunnels reach this daemon at, behind "
                            "a 1:1 NAT or a port forward (none: the --listen address); the "
                            "listener stays on --listen; forward its TCP port and the tunnel "
                            "ports (--tunnel-port and up, one per engine) unchanged",
                            "IP[:PORT]")
    tunnel_port: int = option(defaults.TUNNEL_PORT, "first UDP port of the tunnels, one per "
                              "engine", "PORT")
    engines: int = option(0, "packet engine threads (0: one per CPU)", "N")
    local_queues: int = option(1, "queues per same-host vWire device, spreading its flows "
                               "over engines (1: cheaper setup)", "N")
    registry: str = option("", "https://IP:PORT: use another daemon's registry instead of "
                           "our own; etcd://HOST:PORT[,HOST:PORT...]: keep it in an etcd "
                           "cluster shared with other daemons", "URL")
    registry_ca: str = option("", "etcd over mutual TLS: the CA of the etcd servers (with "
                              "--registry-cert and --registry-key; plaintext otherwise, with "
                              "a warning)", "PEM")
    registry_cert: str = option("", "our client certificate for etcd", "PEM")
    registry_key: str = option("", "its private key", "PEM")
    registry_id: str = option("", "the SPIFFE ID the --registry daemon must present (none: "
                              "any ID of our trust domain, with a warning)", "SPIFFE_ID")
    identity_dir: str = option("", "svid.pem, svid.key, bundle.pem (from `nsmd ca issue`); "
                               "needed to peer; reloaded when the files change", "DIR")
    spiffe_socket: str = option("", "SPIFFE Workload API giving SVIDs, rotated live (env "
                                "SPIFFE_ENDPOINT_SOCKET)", "unix:///PATH")
    policy: str = option("", "YAML authorization policies: who may request or register "
                         "which network services (see docs/security.md); SIGHUP reads it "
                         "again", "FILE")
    api_group: str = option("", "group allowed to use the API socket (mode 0660; none: root "
                            "only, 0600)", "GROUP")
    domain: str = option("", "this daemon's domain in NAME@DOMAIN names (none: its trust "
                         "domain)", "NAME")
    domains: str = option("", "TOML: \"DOMAIN\" = \"https://HOST:PORT\" of each other "
                          "domain's registry (otherwise DNS SRV _nsmd-registry._tcp.DOMAIN)",
                          "FILE")
    registry_only: bool = option(False, "hold services and endpoints (a floating registry) "
                                 "and make no vWires")
    relay: bool = option(False, "forward sealed tunnel datagrams for hosts that cannot reach "
                         "each other directly (both behind NAT), holding none of their keys; "
                         "announced in the registry as service nsmd-relay, whose policy "
                         "`request` rule says who may use it (needs --listen)")
    federate: str = option("", "trust peers of another trust domain with that domain's CA "
                           "bundle (repeatable; in TOML comma-separated); they may do only "
                           "what a --policy subject naming their trust domain allows",
                           "TRUST_DOMAIN=BUNDLE.pem", repeat=True)
    dns_upstream: str = option("", "the host's resolvers: for DNS SRV lookups of other "
                               "domains and, with --vl3-dns-forward, vL3 names outside their "
                               "zones (none: the nameservers of /etc/resolv.conf)",
                               "IP[:PORT],...")
    vl3_dns_forward: bool = option(False, "let vL3 resolvers forward names outside their "
                                   "zones to --dns-upstream, from the host's namespace "
                                   "(otherwise refused)")
    metrics_listen: str = option("", "serve Prometheus /metrics over plain HTTP at IP:PORT "
                                 "(none: only on the API socket); keep it on loopback or a "
                                 "management network", "IP:PORT")
    log_level: str = option("info", "the least severe messages logged (SIGUSR1 switches to "
                            "debug and back)", choices=("debug", "info", "warning", "error"))
    log_format: str = option("text", "text lines, or one JSON object a line with the "
                             "structured fields of each message (policy, subject, ...)",
                             choices=("text", "json"))
    # tuning: TOML and NSMD_* only
    token_lifetime_s: float = option(defaults.TOKEN_LIFETIME_S, "path tokens; clients "
                                     "refresh at 1/5 to 1/3 of it", flag=False)
    nse_expiry_s: float = option(defaults.NSE_EXPIRY_S, "registrations of peers' endpoints",
                                 flag=False)
    local_mtu: int = option(defaults.LOCAL_MTU, "same-host vWires", flag=False)
    tunnel_mtu: int = option(defaults.TUNNEL_MTU, "vWires over tunnels", flag=False)
    keepalive_s: float = option(defaults.KEEPALIVE_S, "idle tunnels send this often",
                                flag=False)
    heal_detect_s: float = option(defaults.HEAL_DETECT_S, "a dead data plane is found within "
                                  "this and healed within 1 s after", flag=False)
    rekey_after_s: float = option(defaults.REKEY_AFTER_S, "tunnel keys are replaced this "
                                  "often", flag=False)
    tunnel_aead: str = option("auto", "the tunnels' AEADs, preferred first, comma-separated: "
                              "aes-256-gcm, chacha20-poly1305, or auto (AES-GCM first where "
                              "the CPU has AES instructions)", flag=False)
    capture_max_bytes: int = option(defaults.CAPTURE_MAX_BYTES, "the largest file a function "
                                    "such as capture writes, in <state-dir>/capture",
                                    flag=False)
    # quotas.py: what one peer or local user may hold of this daemon (docs/security.md)
    quota_connections_per_peer: int = option(Limits.connections_per_peer, "vWires one peer "
                                             "daemon holds here", flag=False)
    quota_connections_per_user: int = option(Limits.connections_per_user, "vWires one local "
                                             "user (uid) holds here", flag=False)
    quota_records_per_registrant: int = option(Limits.records_per_registrant, "services and "
                                               "endpoints one peer registered here",
                                               flag=False)
    quota_watches_per_peer: int = option(Limits.watches_per_peer, "registry watch streams "
                                         "one peer keeps open", flag=False)
    quota_body_bytes: int = option(Limits.body_bytes, "a request body (root's on the API "
                                   "socket excepted)", flag=False)
    quota_relays_per_peer: int = option(Limits.relays_per_peer, "relayed vWires one peer "
                                        "holds at a --relay daemon", flag=False)

    def validate(self) -> Config:
        # imported here: the CLI reads the declarations without loading cryptography
        from nsmd.identity.ca import parse_spiffe_id
        from nsmd.identity.federation import parse_federate
        from nsmd.model.registry import check_name

        if not self.name:
            raise ValidationError("name", "a non-empty node name")
        for key in ("state_dir", "api_socket"):
            if not os.path.isabs(getattr(self, key)):
                raise ValidationError(key.replace("_", "-"), "an absolute path",
                                      getattr(self, key))
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ValidationError("log-level", "debug, info, warning or error", self.log_level)
        if self.log_format not in ("text", "json"):
            raise ValidationError("log-format", "text or json", self.log_format)
        if not 0 < self.tunnel_port < 65536 - 64:
            raise ValidationError("tunnel-port", "a UDP port (1-65471)", self.tunnel_port)
        if not 0 <= self.engines <= 64:
            raise ValidationError("engines", "0 (one per CPU) to 64", self.engines)
        if not 1 <= self.local_queues <= 64:
            raise ValidationError("local-queues", "1 to 64", self.local_queues)
        if self.token_lifetime_s < 1 or self.nse_expiry_s < 1:
            raise ValidationError("token-lifetime-s/nse-expiry-s", "at least 1 second")
        if not 576 <= self.local_mtu <= 65535:
            raise ValidationError("local-mtu", "an MTU between 576 and 65535", self.local_mtu)
        if not 576 <= self.tunnel_mtu <= 1500 - 80:
            raise ValidationError("tunnel-mtu", "an MTU between 576 and 1420", self.tunnel_mtu)
        if not 0.1 <= self.keepalive_s <= 60:
            raise ValidationError("keepalive-s", "0.1 to 60 seconds", self.keepalive_s)
        if not 0.4 <= self.heal_detect_s <= 600:
            raise ValidationError("heal-detect-s", "0.4 to 600 seconds", self.heal_detect_s)
        if self.keepalive_s > self.heal_detect_s * 3 / 8:
            # two keepalives must fit in the silence that counts as death (3/4 of it)
            raise ValidationError("keepalive-s", f"at most 3/8 of heal-detect-s "
                                  f"({self.heal_detect_s * 3 / 8:g} s)", self.keepalive_s)
        if not 1 <= self.rekey_after_s <= REKEY_LIMIT_S:
            raise ValidationError("rekey-after-s", f"1 to {REKEY_LIMIT_S:.0f} seconds (tunnel "
                                  "keys are refused 180 s after they were made)",
                                  self.rekey_after_s)
        for f in dataclasses.fields(Limits):
            if getattr(self, f"quota_{f.name}") < 1:
                raise ValidationError(f"quota-{f.name.replace('_', '-')}", "at least 1",
                                      getattr(self, f"quota_{f.name}"))
        if self.relay and (not self.listen or self.registry_only):
            raise ValidationError("relay", "--listen (where the relay's ports are) and no "
                                  "--registry-only (a relay forwards on its engines)")
        if self.capture_max_bytes < 124:
            raise ValidationError("capture-max-bytes", "at least 124 bytes",
                                  self.capture_max_bytes)
        _parsed = (self.tunnel_aeads, self.listen_at, self.upstream,  # bad ones refused now
                   self.advertised_at, self.metrics_at)
        if self.domain:
            check_name(self.domain, "domain")
            if "@" in self.domain:
                raise ValidationError("domain", "a domain name without '@'", self.domain)
        if self.domains and not os.path.isfile(self.domains):
            raise ValidationError("domains", "a readable TOML file", self.domains)
        for td, path in parse_federate(self.federate):
            if not os.path.isfile(path):
                raise ValidationError("federate", "TRUST_DOMAIN=BUNDLE.pem with a readable "
                                      "file", f"{td}={path}")
        if self.registry.startswith("etcd://"):
            etcd_members(self.registry)
        elif self.registry and not self.registry.startswith("https://"):
            raise ValidationError("registry", "https://HOST:PORT of another nsmd, or "
                                  "etcd://HOST:PORT[,HOST:PORT...]", self.registry)
        if self.registry_id:
            if not self.registry.startswith("https://"):
                raise ValidationError("registry-id", "used together with --registry https://")
            parse_spiffe_id(self.registry_id, "registry-id")
        tls = [self.registry_ca, self.registry_cert, self.registry_key]
        if any(tls):
            svid = bool(self.registry_ca and not self.registry_cert and not self.registry_key
                        and (self.identity_dir or self.spiffe_socket))
            if not self.registry.startswith("etcd://") or not (all(tls) or svid):
                raise ValidationError("registry-ca", "--registry-ca with --registry-cert and "
                                      "--registry-key, or with an identity (our SVID as the "
                                      "client certificate), and --registry etcd://...")
            for option, path in zip(("registry-ca", "registry-cert", "registry-key"), tls,
                                    strict=True):
                if path and not os.path.isfile(path):
                    raise ValidationError(option, "a readable PEM file", path)
        if self.api_group:
            group_id(self.api_group)
        if self.spiffe_socket and not self.spiffe_socket.startswith("unix:///"):
            raise ValidationError("spiffe-socket", "unix:///PATH of a SPIFFE Workload API",
                                  self.spiffe_socket)
        peers = self.listen or self.registry.startswith("https://")
        if peers and not (self.identity_dir or self.spiffe_socket):
            raise ValidationError("identity-dir", "a directory with svid.pem, svid.key and "
                                  "bundle.pem, or --spiffe-socket (peering needs an "
                                  "identity; see `nsmd ca`)")
        return self

    # Parsed values, each parsed once (validate() touches them all): the daemon uses these.

    @functools.cached_property
    def tunnel_aeads(self) -> tuple[str, ...]:
        from nsmd.tunnel_keys import parse_aeads

        return parse_aeads(self.tunnel_aead, "tunnel-aead")

    @functools.cached_property
    def listen_at(self) -> tuple[str, int] | None:
        """(host, port) of --listen, or None."""
        return listen_address(self.listen) if self.listen else None

    @functools.cached_property
    def advertised_at(self) -> tuple[str, int] | None:
        """Where others reach this daemon: --advertise (its port defaulting to --listen's),
        else --listen; None without a listener."""
        if not self.advertise:
            return self.listen_at
        if self.listen_at is None:
            raise ValidationError("advertise", "--listen too", detail="advertise: needs "
                                  "--listen (the listener it is the public address of)")
        host, sep, port = self.advertise.rpartition(":")
        if not sep:
            host, port = self.advertise, str(self.listen_at[1])
        return listen_address(f"{host}:{port}", "advertise")

    @functools.cached_property
    def metrics_at(self) -> tuple[str, int] | None:
        return listen_address(self.metrics_listen, "metrics-listen") \
            if self.metrics_listen else None

    @property
    def advertised_ip(self) -> str:
        """The IP tunnels are reached at if --advertise says another than --listen, else ""."""
        return self.advertised_at[0] if self.advertise and self.advertised_at else ""

    @functools.cached_property
    def upstream(self) -> list[tuple[str, int]]:
        """--dns-upstream's servers, as given ([] = resolv.conf's)."""
        return dns_servers(self.dns_upstream)

    @property
    def limits(self) -> Limits:
        return Limits(**{f.name: getattr(self, f"quota_{f.name}")
                         for f in dataclasses.fields(Limits)})

    @property
    def url(self) -> str:
        """How other daemons and the registry name this one (its advertised address)."""
        if self.advertised_at is None:
            return f"unix://{self.api_socket}"
        host, port = self.advertised_at
        return f"https://{host}:{port}"


def group_id(name: str) -> int:
    """The gid of a group name or number (the API socket's --api-group)."""
    try:
        return int(name) if name.isdigit() else grp.getgrnam(name).gr_gid
    except KeyError:
        raise ValidationError("api-group", "an existing group name or gid", name) from None


def etcd_members(url: str) -> list[tuple[str, int]]:
    """etcd://HOST:PORT[,HOST:PORT...] -> [(host, port)]."""
    members = []
    for item in url.removeprefix("etcd://").rstrip("/").split(","):
        host, _, port = item.strip().rpartition(":")
        if not url.startswith("etcd://") or not host or not port.isdigit() or \
                not 0 < int(port) < 65536:
            raise ValidationError("registry", "etcd://HOST:PORT[,HOST:PORT...]", url)
        members.append((host.strip("[]"), int(port)))
    return members


def dns_servers(value: str) -> list[tuple[str, int]]:
    """`--dns-upstream`: "IP", "IPv4:PORT" or "[IPv6]:PORT", comma-separated."""
    servers = []
    for item in (i.strip() for i in value.split(",")):
        if not item:
            continue
        host, port = item, "53"
        if item.startswith("[") and "]:" in item:
            host, port = item[1:].split("]:", 1)
        elif item.count(":") == 1:
            host, port = item.split(":")
        try:
            ipaddress.ip_address(host)
            number = int(port)
        except ValueError:
            number = 0
        if not 0 < number < 65536:
            raise ValidationError("dns-upstream", "IP, IPv4:PORT or [IPv6]:PORT, "
                                  "comma-separated", item)
        servers.append((host, number))
    return servers


def listen_address(value: str, option: str = "listen") -> tuple[str, int]:
    """HOST:PORT with an IPv4 host (the tunnel socket binds there too, so not 0.0.0.0)."""
    host, sep, port = value.rpartition(":")
    try:
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError
        address = ipaddress.IPv4Address(host)
        if address.is_unspecified:
            raise ValueError
    except ValueError:
        raise ValidationError(option, "IPV4:PORT, e.g. 192.0.2.1:7000 (peers and tunnels use "
                              "that address)", value) from None
    return host, int(port)


def load(cli: dict[str, Any], config_file: str | None = None,
         environ: Mapping[str, str] | None = None) -> Config:
    """Merges the sources; `cli` holds only the options given on the command line."""
    return load_with_sources(cli, config_file, environ)[0]


def load_with_sources(cli: dict[str, Any], config_file: str | None = None,
                      environ: Mapping[str, str] | None = None,
                      ) -> tuple[Config, dict[str, str]]:
    """The configuration, and where each value given came from (`nsmd run --check-config`):
    the file, a variable or the command line; options not named are defaults."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    fields = {f.name: f for f in dataclasses.fields(Config)}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    path = config_file or env.get(ENV_PREFIX + "CONFIG")
    if path:
        from_file = _from_toml(path, fields)
        values.update(from_file)
        sources.update(dict.fromkeys(from_file, path))
    if env.get("SPIFFE_ENDPOINT_SOCKET"):  # the SPIFFE standard variable
        values["spiffe_socket"] = env["SPIFFE_ENDPOINT_SOCKET"]
        sources["spiffe_socket"] = "SPIFFE_ENDPOINT_SOCKET"
    for name, f in fields.items():
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is not None:
            values[name] = _coerce(f, raw, ENV_PREFIX + name.upper())
            sources[name] = ENV_PREFIX + name.upper()
    given = {k: v for k, v in cli.items() if v is not None and k in fields}
    values.update(given)
    sources.update(dict.fromkeys(given, "command line"))
    return Config(**values).validate(), sources


def _from_toml(path: str, fields: dict[str, dataclasses.Field]) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ValidationError("config", "an existing TOML file", path) from None
    except tomllib.TOMLDecodeError as err:
        raise ValidationError("config", "valid TOML", detail=f"{path}: not valid TOML ({err})"
                              ) from None
    values = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in fields:
            raise ValidationError(f"{path}: {key}", f"one of {', '.join(fields)}",
                                  detail=f"{path}: unknown option {key!r}")
        values[name] = _coerce(fields[name], value, f"{path}: {key}")
    return values


def _coerce(f: dataclasses.Field, value: Any, where: str) -> Any:
    kind = type(f.default) if f.default is not dataclasses.MISSING else str
    try:
        if kind is int and not isinstance(value, bool):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)  # 1500.5 is not an MTU, nor a truncated one
            return int(value)
        if kind is float and not isinstance(value, bool):
            return float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(inf)
        raise ValidationError(where, f"a number ({kind.__name__})", value) from None
    if kind is str and isinstance(value, str):
        return value
    if kind is bool and isinstance(value, str) and value.lower() in _BOOLS:
        return _BOOLS[value.lower()]
    if isinstance(value, kind):
        return value
    raise ValidationError(where, f"a {kind.__name__}", value)
