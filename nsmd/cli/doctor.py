"""`nsmd doctor`: what this host and its configuration need to run nsmd, each check one line
with ok, warn or fail and, if not ok, the fix. Exit 0 when all are ok, 1 with a warning,
2 with a failure; `-o json` gives the same as a list.

The checks read the configuration the daemon would (--config, NSMD_*), then look at the
host (TUN device, privileges, namespaces, AES instructions), the identity (SVID valid, not
due for renewal), the daemon (its API socket) and the registry daemon it uses (reachable
over mutual TLS, and its clock: path tokens expire by wall time).
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import os
import time
from collections.abc import Callable

OK, WARN, FAIL = "ok", "warn", "fail"
CLOCK_SKEW_WARN_S = 5.0
CAP_NET_ADMIN, CAP_SYS_ADMIN = 12, 21


@dataclasses.dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        fix = f" (fix: {self.fix})" if self.fix else ""
        return f"{self.status:<5} {self.name}: {self.detail}{fix}"


def run_checks(config_file: str | None, api_socket: str | None) -> list[Check]:
    from nsmd import config as nsmd_config
    from nsmd.errors import NsmdError

    try:
        cfg = nsmd_config.load({"api_socket": api_socket} if api_socket else {}, config_file)
    except NsmdError as err:
        return [Check("config", FAIL, str(err), "correct that option (nsmd run --help)")]
    checks = [Check("config", OK, "valid (nsmd run --check-config prints it)")]
    for probe in (_tun, _privileges, _namespaces, _aes):
        checks.append(probe())
    checks += _identity(cfg)
    checks.append(_daemon(cfg.api_socket))
    if cfg.registry.startswith("https://"):
        checks += asyncio.run(_registry(cfg))
    return checks


def _tun() -> Check:
    try:
        os.close(os.open("/dev/net/tun", os.O_RDWR))
    except OSError as err:
        return Check("tun", FAIL, f"/dev/net/tun does not open ({err.strerror})",
                     "modprobe tun; in a container, --device /dev/net/tun")
    return Check("tun", OK, "/dev/net/tun opens")


def _privileges() -> Check:
    caps = 0
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapEff:"):
                caps = int(line.split()[1], 16)
    missing = [name for bit, name in ((CAP_NET_ADMIN, "CAP_NET_ADMIN"),
                                      (CAP_SYS_ADMIN, "CAP_SYS_ADMIN")) if not caps >> bit & 1]
    if missing:
        return Check("privileges", FAIL, f"missing {', '.join(missing)}",
                     "run as root, or grant them (the systemd unit does)")
    return Check("privileges", OK, "CAP_NET_ADMIN and CAP_SYS_ADMIN")


def _namespaces() -> Check:
    path = "/run/netns"
    if os.path.isdir(path) and not os.access(path, os.W_OK):
        return Check("namespaces", FAIL, f"{path} is not writable",
                     "mount /run/netns shared and writable (a container: -v /run/netns)")
    return Check("namespaces", OK, f"{path} usable for named namespaces")


def _aes() -> Check:
    from nsmd.tunnel_keys import cpu_has_fast_aes

    if cpu_has_fast_aes():
        return Check("aes", OK, "AES instructions: tunnels prefer aes-256-gcm")
    return Check("aes", WARN, "no AES instructions: tunnels use chacha20-poly1305",
                 "nothing to do unless throughput matters; tunnel-aead says which")


def _identity(cfg) -> list[Check]:
    from nsmd.errors import NsmdError
    from nsmd.identity import ca
    from nsmd.identity.identity import renewal_due
    from nsmd.identity.svid import load_svid_dir

    if cfg.spiffe_socket:
        path = cfg.spiffe_socket.removeprefix("unix://")
        if not os.path.exists(path):
            return [Check("identity", FAIL, f"no Workload API socket at {path}",
                          "start the SPIRE agent, or correct --spiffe-socket")]
        return [Check("identity", OK, f"Workload API socket {path} (SVIDs rotate live)")]
    if not cfg.identity_dir:
        return [Check("identity", OK, "none configured (no peers: one host only)")]
    try:
        line = ca.verify_svid(cfg.identity_dir)
    except NsmdError as err:
        return [Check("identity", FAIL, str(err), "nsmd ca renew DIR, or issue a new SVID")]
    if renewal_due(load_svid_dir(cfg.identity_dir).chain[0], time.time()):
        return [Check("identity", WARN, f"{line}: renewal due",
                      f"nsmd ca renew {cfg.identity_dir} --state-dir CA")]
    return [Check("identity", OK, line)]


def _daemon(api_socket: str) -> Check:
    from nsmd.cli.client import Client, ClientError

    try:
        status = Client(api_socket).call("GET", "/v1/status")
    except ClientError as err:
        return Check("daemon", WARN, str(err), "systemctl start nsmd (or nsmd run)")
    plane = status.get("dataplane", {})
    return Check("daemon", OK, f"{status['name']} {status['version']} up "
                 f"{status['uptime_s']:.0f} s, {status['connections']} connection(s), "
                 f"{plane.get('wires', 0)} wire(s)")


async def _registry(cfg) -> list[Check]:
    import aiohttp

    from nsmd.identity.identity import Identity

    if not (cfg.identity_dir or cfg.spiffe_socket):
        return []
    identity = Identity.from_config(cfg.identity_dir, cfg.spiffe_socket, cfg.token_lifetime_s,
                                    cfg.federate)
    try:
        await asyncio.wait_for(identity.start(), 10)
        async with aiohttp.ClientSession() as session:
            started = time.time()
            async with session.get(f"{cfg.registry}/v1/services",
                                   ssl=identity.tls.client(cfg.registry_id),
                                   timeout=aiohttp.ClientTimeout(total=10)) as resp:
                headers = resp.headers
    except Exception as err:  # every failure is the check's answer
        return [Check("registry", FAIL, f"{cfg.registry}: {err}",
                      "is that daemon up and --registry-id its SPIFFE ID? (ports, firewall)")]
    finally:
        identity.close()
    checks = [Check("registry", OK, f"{cfg.registry} answers over mutual TLS")]
    date = headers.get("Date")
    if date:
        skew = email.utils.parsedate_to_datetime(date).timestamp() - started
        status = WARN if abs(skew) > CLOCK_SKEW_WARN_S else OK
        checks.append(Check("clock", status, f"{skew:+.0f} s from the registry's",
                            "synchronise the clocks (chrony/systemd-timesyncd): tokens "
                            "expire by wall time" if status == WARN else ""))
    return checks


def exit_code(checks: list[Check]) -> int:
    worst: Callable[[str], bool] = lambda s: any(c.status == s for c in checks)  # noqa: E731
    return 2 if worst(FAIL) else 1 if worst(WARN) else 0
