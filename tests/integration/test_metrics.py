"""Prometheus scrapes a daemon over plain HTTP (--metrics-listen): the process and build
metrics, the SVID's and the bundle's expiry, and nothing of the API."""

from __future__ import annotations

import datetime as dt
import sys
import time

from nsmd.identity.svid import load_svid_dir
from nsmd.testing.sandbox import sh, trust_domain, underlay, wait_until

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
