"""Zero trust, black-box: an attacker holding an ordinary SVID of the same trust domain
(spiffe://test.nsmd/workload/evil, from the same CA) calls the peer APIs directly from its
own host on the underlay. Every attack is refused with a 403 naming the policy, nothing
is created or changed, and the legitimate vWire loses no packet meanwhile."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from nsmd.identity import tokens
from nsmd.model import Mechanism, PathSegment
from nsmd.testing.attacker import (
    EVIL,
    IP1,
    IP2,
    IP_EVIL,
    N1,
    N2,
    TD,
    Bed,
    as_user,
    connect_as,
    refused,
)
from nsmd.testing.sandbox import (
    endpoint_manifest,
    host,
    ping,
    ping_report,
    service_manifest,
    sh,
    trust_domain,
    underlay,
    wait_until,
)


@pytest.fixture
def bed(netns, daemon, tmp_path):
    return Bed(netns, daemon, tmp_path)


def test_registry_names_cannot_be_taken_over(bed):
    secure = """
apiVersion: networkservicemesh.io/v1
kind: NetworkService
metadata: {name: secure}
spec:
  payload: IP
  matches: [{routes: [{destination_selector: {app: real}}]}]
"""
    bed.near.cli("apply", "-f", "-", stdin=secure)  # an admin's service on the registry
    before = bed.footprint()
    registry = f"https://{IP1}:7000"
    refused(bed.attack("POST", f"{registry}/v1/services", {
        "name": "secure", "matches": [{"routes": [{"destination_selector": {"app": "evil"}}]}]}),
        "registry_owner")
    refused(bed.attack("POST", f"{registry}/v1/endpoints", {
        "name": "far-1", "network_service_names": ["remote-svc"],
        "url": f"https://{IP_EVIL}:7000"}), "registry_owner")
    refused(bed.attack("DELETE", f"{registry}/v1/services/remote-svc"), "registry_owner")
    refused(bed.attack("DELETE", f"{registry}/v1/endpoints/far-1"), "registry_owner")
    # the registry host's own admin cannot remove another daemon's endpoint either
    deleted = bed.near.cli("delete", "endpoint", "far-1", check=False)
    assert deleted.returncode == 1 and "registry_owner" in deleted.stderr, deleted.stderr
    assert bed.footprint() == before
    (svc,) = [s for s in bed.near.cli_json("get", "services") if s["name"] == "secure"]
    assert svc["path_ids"] == [N1]


def test_peer_requests_for_interfaces_relays_hijacks_and_bad_tokens_are_refused(bed):
    conn = bed.near.cli_json("connect", "remote-svc", "--netns", bed.nsc_ns)
    target = host(conn["context"]["ip_context"]["dst_ip_addrs"][0])
    (victim,) = bed.far.cli_json("get", "connections")
    pinger = subprocess.Popen(["ip", "netns", "exec", bed.nsc_ns, "ping", "-c", "400", "-i",
                               "0.02", "-W", "1", target], stdout=subprocess.PIPE, text=True)
    try:
        before = bed.footprint()
        far = f"https://{IP2}:7000"
        # a drop notice (heal now!) for the victim's vWire from anyone but the far host
        notice = json.loads(json.dumps(victim))   # as the endpoint's host holds it
        result = bed.attack("POST", f"https://{IP1}:7000/v1/peer/dropped", notice)
        assert result["status"] == 404 and "keyed towards" in result["body"]["error"], result
        # an interface in the endpoint host's namespaces
        kernel = Mechanism(cls="LOCAL", type="KERNEL", parameters={"netns": bed.nse_ns,
                                                                   "name": "evil0"})
        refused(bed.attack("POST", f"{far}/v1/peer/request", bed.request(mechanism=kernel)),
                "remote_mechanisms_only")
        # a daemon that does not host the endpoint relaying under its own identity
        refused(bed.attack("POST", f"https://{IP1}:7000/v1/peer/request",
                           bed.request(aud=N1)), "hosted_endpoints_only")
        # the refresh hijack: the victim's segments behind the attacker's own, with its offer
        tail = [PathSegment(name=s["name"], id=s["id"])
                for s in victim["path"]["path_segments"][2:]]
        refused(bed.attack("POST", f"{far}/v1/peer/request", bed.request(path_tail=tail)),
                "refresh_by_owner")
        # ... and the victim's own request replayed verbatim from the attacker's host
        replay = {"connection": victim, "mechanism_preferences": []}
        replay["connection"]["path"]["index"] = 1
        replay["connection"]["id"] = victim["path"]["path_segments"][1]["id"]
        result = bed.attack("POST", f"{far}/v1/peer/request", replay)
        assert result["status"] == 403, result
        # rekey and close of the victim's vWire
        refused(bed.attack("POST", f"{far}/v1/peer/rekey", {
            "connection_id": victim["path"]["path_segments"][2]["id"],
            "offer": bed.request()["mechanism_preferences"][0]["parameters"]}),
            "refresh_by_owner")
        refused(bed.attack("POST", f"{far}/v1/peer/close", replay["connection"]),
                "refresh_by_owner")
        # tokens: forged, expired, unchained, for another audience, of a foreign domain
        now = time.time()
        as_n1 = tokens.jwt.encode({"sub": N1, "aud": N2, "exp": now + 600}, bed.evil.key,
                                  algorithm="ES256")  # claims to come from n1
        refused(bed.attack("POST", f"{far}/v1/peer/request", bed.request(
            first=tokens.sign(bed.evil, N1, now, 600)[0], caller_token=as_n1)),
            "prev_token_signed")
        stray_key = ec.generate_private_key(ec.SECP256R1())  # not the key of its certificate
        forged = tokens.jwt.encode({"sub": EVIL, "aud": N2, "exp": now + 600}, stray_key,
                                   algorithm="ES256")
        refused(bed.attack("POST", f"{far}/v1/peer/request", bed.request(
            caller_token=forged)), "prev_token_signed")
        expired = tokens.sign(bed.evil, N2, now - 1200, 600)[0]
        refused(bed.attack("POST", f"{far}/v1/peer/request", bed.request(
            caller_token=expired)), "tokens_expired")
        refused(bed.attack("POST", f"{far}/v1/peer/request", bed.request(
            first=tokens.sign(bed.evil, N1, now, 600)[0])), "tokens_chained")
        refused(bed.attack("POST", f"{far}/v1/peer/request", bed.request(aud=N1)),
                "tokens_chained")
        foreign = tokens.jwt.encode({"sub": "spiffe://other.org/node/x", "aud": EVIL,
                                     "exp": now + 600}, bed.evil.key, algorithm="ES256")
        refused(bed.attack("POST", f"{far}/v1/peer/request", bed.request(first=foreign)),
                "tokens_trust_domain")
        refused(bed.attack("POST", f"{far}/v1/peer/request", bed.request(
            caller_token="")), "tokens_valid")
        assert bed.footprint() == before
    finally:
        out = pinger.communicate(timeout=60)[0]
    assert " 0% packet loss" in out, ping_report(out)
    # the owner still holds and closes its vWire
    bed.near.cli("close", conn["id"])
    wait_until(lambda: bed.far.cli_json("get", "connections") == [])


def test_a_policy_file_says_who_may_request_and_register(netns, daemon, tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"""
services:
  - name: remote-svc
    request: [{N1}, "unix:uid=0"]
    register: ["spiffe://{TD}/node/*", "unix:uid=0"]
default:
  request: ["spiffe://{TD}/node/*"]
  register: ["spiffe://{TD}/node/*"]
""")
    bed = Bed(netns, daemon, tmp_path, n1_args=("--policy", str(policy)),
              n2_args=("--policy", str(policy)))
    before = bed.footprint()
    # a well-formed request, correctly signed by the attacker itself: not on the list
    refused(bed.attack("POST", f"https://{IP2}:7000/v1/peer/request", bed.request()),
            "services[0]")
    refused(bed.attack("POST", f"https://{IP1}:7000/v1/endpoints", {
        "name": "evil-1", "network_service_names": ["remote-svc"],
        "url": f"https://{IP_EVIL}:7000"}), "services[0]")
    refused(bed.attack("POST", f"https://{IP1}:7000/v1/services", {"name": "other"}),
            "default")
    assert bed.footprint() == before
    # the listed client's host gets its vWire
    conn = bed.near.cli_json("connect", "remote-svc", "--netns", bed.nsc_ns)
    assert ping(bed.nsc_ns, host(conn["context"]["ip_context"]["dst_ip_addrs"][0]),
                2).returncode == 0
    # the tokens along the path are chained from the client's host to the endpoint's
    claims = [tokens.read(s["token"]) for s in conn["path"]["path_segments"]]
    assert [(c.sub, c.aud) for c in claims] == [(N1, N1), (N1, N2), (N2, N2), (N2, N2)]

    # SIGHUP reads the file again: one that does not parse is logged and changes nothing
    policy.write_text("services: [{name: remote-svc, request: nobody}]\n")
    bed.near.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "not reloaded" in bed.near.log())
    assert "services[0].request" in bed.near.log()
    other = {"name": "other"}
    refused(bed.attack("POST", f"https://{IP1}:7000/v1/services", other), "default")
    # a good one decides from the next request on; the vWire made before stays up
    policy.write_text(f'default: {{register: ["spiffe://{TD}/*"]}}\n')
    bed.near.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reloaded (0 service rule(s))" in bed.near.log())
    assert bed.attack("POST", f"https://{IP1}:7000/v1/services", other)["status"] == 200
    assert ping(bed.nsc_ns, host(conn["context"]["ip_context"]["dst_ip_addrs"][0]),
                1).returncode == 0


def test_local_callers_are_told_apart_by_uid_and_group(netns, daemon, tmp_path):
    nobody = 65534
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"""
services:
  - name: shared
    request: ["unix:gid={nobody}", "unix:uid=0"]
default:
  request: ["unix:uid=0"]
  register: ["unix:uid=0"]
""")
    run_dir = tempfile.mkdtemp(prefix="nsmdt-run-")
    os.chmod(run_dir, 0o755)  # the socket itself is what guards the API
    sock_path = os.path.join(run_dir, "api.sock")
    try:
        d = daemon("n1", args=("--policy", str(policy), "--api-group", str(nobody)),
                   socket=sock_path)
        assert oct(os.stat(sock_path).st_mode & 0o777) == "0o660"
        assert os.stat(sock_path).st_gid == nobody
        nse_ns, app_ns = netns("nse"), netns("app")
        d.cli("apply", "-f", "-", stdin="---".join([
            service_manifest("shared"), service_manifest("private"),
            endpoint_manifest("e-shared", "shared", nse_ns, "169.254.10.0/24"),
            endpoint_manifest("e-private", "private", nse_ns, "169.254.20.0/24")]))
        # a member of the API group: allowed on `shared` by its group, nothing else
        status, denied = as_user(nobody, nobody, sock_path, "POST", "/v1/connections",
                                  {"network_service": "private", "netns": app_ns})
        assert status == 403 and denied["policy"] == "default", denied
        for elsewhere in ("", "/proc/1/ns/net"):  # the host's own namespace: not for users
            status, denied = as_user(nobody, nobody, sock_path, "POST", "/v1/connections",
                                      {"network_service": "shared", "netns": elsewhere})
            assert status == 403 and denied["policy"] == "local_namespaces", denied
        status, mine = as_user(nobody, nobody, sock_path, "POST", "/v1/connections",
                                {"network_service": "shared", "netns": app_ns})
        assert status == 201, mine
        status, denied = as_user(nobody, nobody, sock_path, "POST", "/v1/apply", {
            "documents": [{"apiVersion": "networkservicemesh.io/v1", "kind": "NetworkService",
                           "metadata": {"name": "shared"}, "spec": {"payload": "IP"}}]})
        assert status == 403 and denied["policy"] == "services[0]", denied
        # root's vWire is not the group member's to close; its own is
        roots = d.cli_json("connect", "private", "--netns", app_ns)
        status, denied = as_user(nobody, nobody, sock_path, "DELETE",
                                  f"/v1/connections/{roots['id']}")
        assert status == 403 and denied["policy"] == "close_by_owner", denied
        status, _ = as_user(nobody, nobody, sock_path, "DELETE",
                             f"/v1/connections/{mine['id']}")
        assert status == 200
        assert [c["id"] for c in d.cli_json("get", "connections")] == [roots["id"]]
        # someone outside the group does not get through the socket at all
        with pytest.raises(PermissionError):
            connect_as(4242, 4242, sock_path)
    finally:
        for name in os.listdir(run_dir):
            os.unlink(os.path.join(run_dir, name))
        os.rmdir(run_dir)


def test_svid_renewal_and_ca_rotation_under_a_live_vwire_lose_nothing(netns, daemon,
                                                                      tmp_path):
    from nsmd.identity.ca import init_ca, issue_svid

    # refresh (new tokens) every 2 s and rekeys every 2 s: the control plane is busy
    # throughout the rotation
    bed = Bed(netns, daemon, tmp_path, env={"NSMD_TOKEN_LIFETIME_S": "6",
                                            "NSMD_REKEY_AFTER_S": "2"})
    ca1 = str(tmp_path / f"ca-{TD}")
    ca2 = str(tmp_path / "ca2")
    init_ca(ca2, TD)
    dirs = {N1: str(tmp_path / "svid-n1"), N2: str(tmp_path / "svid-n2")}
    daemons = {N1: bed.near, N2: bed.far}
    conn = bed.near.cli_json("connect", "remote-svc", "--netns", bed.nsc_ns)
    target = host(conn["context"]["ip_context"]["dst_ip_addrs"][0])

    def identity(sid):
        return daemons[sid].cli_json("status")["identity"]

    def put(sid, name, data: bytes):
        tmp = os.path.join(dirs[sid], f".{name}.new")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, os.path.join(dirs[sid], name))

    def trust(bundle: bytes, cas: int):
        for sid in dirs:
            put(sid, "bundle.pem", bundle)
        for sid in dirs:
            wait_until(lambda sid=sid: identity(sid)["bundle_cas"] == cas, timeout=10)

    def renew(ca):
        for sid in dirs:
            old = identity(sid)["serial"]
            fresh = issue_svid(ca, sid, str(tmp_path / f"new-{sid.rsplit('/', 1)[1]}"))
            for name in ("svid.key", "svid.pem"):  # a renewal seen half-done is skipped
                with open(os.path.join(fresh, name), "rb") as f:
                    put(sid, name, f.read())
            wait_until(lambda sid=sid, old=old: identity(sid)["serial"] != old, timeout=10)

    def ca_pem(state):
        with open(os.path.join(state, "ca", "ca.pem"), "rb") as f:
            return f.read()

    pinger = subprocess.Popen(["ip", "netns", "exec", bed.nsc_ns, "ping", "-c", "900", "-i",
                               "0.02", "-W", "1", target], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1)
        renew(ca1)                                   # an ordinary renewal
        trust(ca_pem(ca1) + ca_pem(ca2), 2)          # CA rotation: the new CA is trusted,
        renew(ca2)                                   # SVIDs come from it,
        trust(ca_pem(ca2), 1)                        # and the old CA leaves the bundle
        time.sleep(4)                                # refreshes and rekeys under CA 2 alone
    finally:
        out = pinger.communicate(timeout=90)[0]
    assert " 0% packet loss" in out, ping_report(out)
    (now,) = bed.near.cli_json("get", "connections")
    assert now["state"] == "UP" and now["network_service_endpoint_name"] == "far-1"
    # an SVID of the removed CA is refused now, though its certificate is still valid
    stale = sh(sys.executable, "-m", "nsmd.testing.peercall", bed.evil_dir, "GET",
               f"https://{IP2}:7000/v1/services", netns=bed.evil_ns, check=False)
    assert stale.returncode != 0 and "SSL" in stale.stderr, stale.stdout + stale.stderr
    bed.near.cli("close", conn["id"])
    wait_until(lambda: bed.far.cli_json("get", "connections") == [])


def test_three_hosts_with_expected_ids_and_a_registry_impostor(netns, daemon, tmp_path):
    """Registry on n1; a client on n2 reaches an endpoint on n3: allowed paths work and
    carry chained tokens. A daemon expecting another registry ID refuses n1."""
    nodes = underlay(netns, ["n1", "n2", "n3", "n4"])
    (n1, ip1), (n2, ip2), (n3, ip3), (n4, ip4) = nodes.items()
    names = {n: f"spiffe://{TD}/node/{n}" for n in ("n1", "n2", "n3", "n4")}
    ids = trust_domain(str(tmp_path), TD, list(names.values()))
    registry = ("--registry", f"https://{ip1}:7000", "--registry-id", names["n1"])
    daemon("n1", n1, ("--listen", f"{ip1}:7000", "--identity-dir", ids[names["n1"]]))
    client = daemon("n2", n2, ("--listen", f"{ip2}:7000", *registry,
                               "--identity-dir", ids[names["n2"]]))
    server = daemon("n3", n3, ("--listen", f"{ip3}:7000", *registry,
                               "--identity-dir", ids[names["n3"]]))
    nse_ns, nsc_ns = netns("nse"), netns("nsc")
    server.cli("apply", "-f", "-", stdin=service_manifest("svc") + "---" +
               endpoint_manifest("e3", "svc", nse_ns, "100.64.53.0/24"))
    wait_until(lambda: client.cli_json("get", "endpoints"))
    conn = client.cli_json("connect", "svc", "--netns", nsc_ns)
    assert ping(nsc_ns, host(conn["context"]["ip_context"]["dst_ip_addrs"][0]),
                2).returncode == 0
    claims = [tokens.read(s["token"]) for s in conn["path"]["path_segments"]]
    assert [(c.sub, c.aud) for c in claims] == [
        (names["n2"], names["n2"]), (names["n2"], names["n3"]),
        (names["n3"], names["n3"]), (names["n3"], names["n3"])]
    # n4 expects the registry to be n3: n1 is an impostor to it, nothing reaches n1
    wrong = daemon("n4", n4, ("--listen", f"{ip4}:7000", "--registry", f"https://{ip1}:7000",
                              "--registry-id", names["n3"], "--identity-dir",
                              ids[names["n4"]]))
    result = wrong.cli("apply", "-f", "-", check=False, stdin=service_manifest("n4-svc"))
    assert result.returncode == 1 and "192.0.2.1:7000" in result.stderr, result.stderr
    assert "n4-svc" not in [s["name"] for s in client.cli_json("get", "services")]
    client.cli("close", conn["id"])
    wait_until(lambda: server.cli_json("get", "connections") == [])
