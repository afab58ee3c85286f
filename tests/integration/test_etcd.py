"""Three daemons sharing one etcd (run by the test in a namespace of its own on the
underlay): records seen everywhere, an etcd restart in the middle with nothing lost and
watches resumed, expiry of a dead daemon's endpoints, and a daemon killed -9 and
restarted keeping its endpoints registered throughout."""

from __future__ import annotations

import signal
import threading
import time

from nsmd.testing.sandbox import (
    EtcdServer,
    endpoint_manifest,
    ping,
    service_manifest,
    trust_domain,
    underlay,
    wait_until,
)
from tests.integration.beds import DOMAIN, connect


def endpoint_names(d) -> set[str]:
    return {e["name"] for e in d.cli_json("get", "endpoints")}


def test_three_daemons_on_one_etcd_survive_its_restart_and_their_own(netns, daemon, tmp_path):
    nodes = underlay(netns, ["n1", "n2", "n3", "etcd"])
    (n1, n2, n3, etcd_ns) = list(nodes)
    etcd = EtcdServer(str(tmp_path / "etcd"), ip=nodes[etcd_ns], netns=etcd_ns).start()
    try:
        ids = trust_domain(str(tmp_path), DOMAIN,
                           [f"spiffe://{DOMAIN}/node/{n}" for n in ("n1", "n2", "n3")])
        env = {"NSMD_NSE_EXPIRY_S": "4", "NSMD_KEEPALIVE_S": "0.5"}
        d1, d2, d3 = (daemon(name, ns, ("--listen", f"{nodes[ns]}:7000", "--registry",
                                        etcd.url, "--identity-dir",
                                        ids[f"spiffe://{DOMAIN}/node/{name}"]), env)
                      for name, ns in (("n1", n1), ("n2", n2), ("n3", n3)))
        assert "plaintext etcd" in d1.log()  # said once, loudly
        nse3, nse2, nsc = netns("nse3"), netns("nse2"), netns("nsc")
        d3.cli("apply", "-f", "-", stdin=service_manifest("remote-svc") + "---" +
               endpoint_manifest("far-1", "remote-svc", nse3, "100.64.50.0/24"))
        wait_until(lambda: "far-1" in endpoint_names(d1))
        conn, target = connect(d1, "remote-svc", nsc)
        assert ping(nsc, target, 1).returncode == 0

        etcd.stop()  # etcd goes away for a while: the data plane does not care
        assert ping(nsc, target, 2).returncode == 0
        etcd.start()  # and a write right after it is back waits for the reconnect
        d2.cli("apply", "-f", "-", stdin=endpoint_manifest("mid-1", "remote-svc", nse2,
                                                             "100.64.51.0/24"))
        wait_until(lambda: endpoint_names(d1) == {"far-1", "mid-1"}, timeout=15)  # resumed
        assert [s["name"] for s in d1.cli_json("get", "services")] == ["remote-svc"]

        # d3 is killed -9 and restarted: its endpoint never leaves anyone's view
        seen_without: list[set[str]] = []
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                names = endpoint_names(d1)
                if "far-1" not in names:
                    seen_without.append(names)
                time.sleep(0.1)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            d3.stop(sig=signal.SIGKILL)
            d3.start()
            time.sleep(6)  # longer than the lease of the killed process
        finally:
            stop.set()
            watcher.join()
        assert seen_without == []

        def reachable() -> bool:  # healed, on far-1 again or on mid-1
            (now,) = d1.cli_json("get", "connections")
            return ping(nsc, now["context"]["ip_context"]["dst_ip_addrs"][0].split("/")[0],
                        1).returncode == 0
        wait_until(reachable, timeout=10)

        # d2 dies for good: its endpoint expires with its lease
        d2.stop(sig=signal.SIGKILL)
        wait_until(lambda: endpoint_names(d1) == {"far-1"}, timeout=10)
        d1.cli("close", conn["id"])
    finally:
        etcd.stop()
