"""Prometheus scrapes a daemon over plain HTTP (--metrics-listen): the process and build
metrics, the SVID's and the bundle's expiry, and nothing of the API; per service, per peer
daemon (also `nsmd get peers`) and heal counters over a real cross-host vWire."""

from __future__ import annotations

import datetime as dt
import sys
import time

from prometheus_client.parser import text_string_to_metric_families

from nsmd.identity.svid import load_svid_dir
from nsmd.testing.sandbox import ping, sh, trust_domain, underlay, wait_until
from tests.integration.beds import DOMAIN, build_two_hosts, connect

FETCH = ("import sys, urllib.request, urllib.error\n"
         "try:\n    print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())\n"
         "except urllib.error.HTTPError as e:\n    print('HTTP', e.code)\n")


def test_metrics_are_scraped_over_plain_http(netns, daemon, tmp_path):
    ((node, ip),) = underlay(netns, ["n1"]).items()
    sid = "spiffe://metrics.nsmd/node/n1"
    ids = trust_domain(str(tmp_path), "metrics.nsmd", [sid])
    daemon("n1", node, ("--listen", f"{ip}:7000", "--identity-dir", ids[sid],
                        "--metrics-listen", f"{ip}:9100"))
    text = sh(sys.executable, "-c", FETCH, f"http://{ip}:9100/metrics", netns=node).stdout
    assert "process_resident_memory_bytes" in text and "python_info" in text
    assert 'nsmd_build_info{python="' in text and 'version="' in text
    line = next(x for x in text.splitlines()
                if x.startswith("nsmd_svid_expiry_timestamp_seconds "))
    expires = float(line.split()[1])
    assert expires == load_svid_dir(ids[sid]).not_after.timestamp() and expires > time.time()
    assert "nsmd_bundle_ca_expiry_timestamp_seconds" in text
    other = sh(sys.executable, "-c", FETCH, f"http://{ip}:9100/v1/status", netns=node).stdout
    assert other.strip() == "HTTP 404"


def test_an_svid_due_for_renewal_is_logged(netns, daemon, tmp_path):
    from nsmd.identity.ca import init_ca, issue_svid

    ((node, ip),) = underlay(netns, ["n1"]).items()
    sid = "spiffe://metrics.nsmd/node/n1"
    init_ca(str(tmp_path / "ca"), "metrics.nsmd")
    # two minutes left of seven (issued 5 minutes back-dated): in its last third
    ids = issue_svid(str(tmp_path / "ca"), sid, str(tmp_path / "id"), dt.timedelta(minutes=2))
    d = daemon("n1", node, ("--listen", f"{ip}:7000", "--identity-dir", ids))
    wait_until(lambda: "expires in" in d.log())
    (line,) = [x for x in d.log().splitlines() if "expires in" in x]
    assert "WARNING" in line and sid in line and f"renew it ({ids})" in line


def scrape(netns: str, at: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of one scrape."""
    text = sh(sys.executable, "-c", FETCH, f"http://{at}/metrics", netns=netns).stdout
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_per_peer_per_service_and_heal_counters(netns, daemon, tmp_path):
    nodes = underlay(netns, ["n1", "n2"])
    (n1, ip1), (n2, ip2) = nodes.items()
    near, far, _, nsc_ns, _ = build_two_hosts(
        netns, daemon, tmp_path, {"NSMD_KEEPALIVE_S": "0.5"}, nodes=nodes,
        args={"n1": ("--metrics-listen", f"{ip1}:9100")})
    far_id, near_id = f"spiffe://{DOMAIN}/node/n2", f"spiffe://{DOMAIN}/node/n1"
    conn, endpoint_ip = connect(near, "remote-svc", nsc_ns)
    assert ping(nsc_ns, endpoint_ip, 10).returncode == 0
    refused = near.cli("connect", "no-such-svc", "--netns", nsc_ns, "--timeout", "0.5",
                       check=False)
    assert refused.returncode == 1

    (peer,) = near.cli_json("get", "peers")
    assert (peer["peer"], peer["wires"]) == (far_id, 1), peer
    assert peer["address"].startswith(f"{ip2}:") and peer["last_rx_age_s"] < 5
    assert peer["rx_packets"] >= 10 and peer["tx_packets"] >= 10
    assert peer["rx_bytes"] >= 840  # 10 echo replies of 84 bytes
    (back,) = far.cli_json("get", "peers")
    assert back["peer"] == near_id and back["rx_packets"] >= 10
    table = near.cli("get", "peers").stdout.splitlines()
    assert table[0].split()[:3] == ["PEER", "ADDRESS", "WIRES"] and far_id in table[1]

    samples = scrape(n1, f"{ip1}:9100")
    assert samples[("nsmd_peer_packets_total", (("direction", "rx"), ("peer", far_id)))] >= 10
    assert samples[("nsmd_peer_wires", (("peer", far_id),))] == 1
    assert samples[("nsmd_service_connections", (("service", "remote-svc"),))] == 1
    assert samples[("nsmd_requests_total", (("op", "request"), ("result", "ok"),
                                            ("service", "remote-svc")))] >= 1
    # a made-up name is counted, but not as a label of its own
    assert samples[("nsmd_requests_total", (("op", "request"), ("result", "error"),
                                            ("service", "unregistered")))] >= 1
    assert not any(("service", "no-such-svc") in labels for _, labels in samples)

    # the endpoint goes: the client's heal tries to reselect, and fails while none exists
    far.cli("delete", "endpoint", "far-1")
    failed = ("nsmd_heal_attempts_total", (("how", "reselect"), ("result", "failed")))
    wait_until(lambda: scrape(n1, f"{ip1}:9100").get(failed, 0) >= 1, timeout=15)
    assert scrape(n1, f"{ip1}:9100")[("nsmd_healing", ())] == 1
    # closed wires keep their counts in the peer's totals
    near.cli("close", conn["id"])
    (after,) = near.cli_json("get", "peers")
    assert after["wires"] == 0 and after["rx_packets"] >= peer["rx_packets"], after
