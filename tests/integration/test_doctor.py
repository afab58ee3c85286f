"""`nsmd doctor` on a healthy host (a daemon with an identity, using another's registry)
and on broken ones: a line per check, the fix where it is not ok, the exit code by the
worst."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from nsmd.testing.sandbox import trust_domain, underlay

TD = "doctor.nsmd"


def doctor(netns: str, *args: str, env: dict | None = None) -> tuple[int, list[dict]]:
    out = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-m", "nsmd",
                          "doctor", "-o", "json", *args], capture_output=True, text=True,
                         timeout=60, env={**os.environ, **(env or {})})
    assert not out.stderr.strip(), out.stderr
    return out.returncode, json.loads(out.stdout)


def test_doctor_on_a_healthy_and_on_broken_hosts(netns, daemon, tmp_path):
    (n1, ip1), (n2, ip2) = underlay(netns, ["n1", "n2"]).items()
    ids = trust_domain(str(tmp_path), TD, [f"spiffe://{TD}/n1", f"spiffe://{TD}/n2"])
    daemon("n1", n1, ("--listen", f"{ip1}:7000", "--identity-dir", ids[f"spiffe://{TD}/n1"]))
    conf = tmp_path / "n2.toml"
    conf.write_text(f'listen = "{ip2}:7000"\nidentity-dir = "{ids[f"spiffe://{TD}/n2"]}"\n'
                    f'registry = "https://{ip1}:7000"\nregistry-id = "spiffe://{TD}/n1"\n')
    d2 = daemon("n2", n2, ("--config", str(conf)))
    code, checks = doctor(n2, "--config", str(conf), "--api-socket", d2.socket)
    by_name = {c["name"]: c for c in checks}
    assert code == 0 and all(c["status"] == "ok" for c in checks), checks
    assert set(by_name) >= {"config", "tun", "privileges", "identity", "daemon", "registry",
                            "clock"}
    assert f"https://{ip1}:7000 answers" in by_name["registry"]["detail"]
    # broken: no daemon, and a registry that is not there
    d2.stop()
    conf.write_text(conf.read_text().replace(ip1, "192.0.2.9"))
    code, checks = doctor(n2, "--config", str(conf), "--api-socket", d2.socket)
    by_name = {c["name"]: c for c in checks}
    assert code == 2, checks
    assert by_name["daemon"]["status"] == "warn" and by_name["daemon"]["fix"]
    assert by_name["registry"]["status"] == "fail" and "--registry-id" in by_name["registry"]["fix"]
    # broken: a configuration that does not load
    code, checks = doctor(n2, "--config", str(tmp_path / "missing.toml"))
    assert code == 2 and checks[0]["name"] == "config" and checks[0]["status"] == "fail"
