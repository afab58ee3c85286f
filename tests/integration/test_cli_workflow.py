"""The operator's CLI round trip against a real daemon: apply --dry-run changes nothing,
get takes the short names, get -w prints each change as it happens, delete -f undoes a
manifest, status prints as a table."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time

from nsmd.testing.sandbox import endpoint_manifest, service_manifest


def manifest(path, nse_ns: str) -> str:
    path.write_text(service_manifest("web") + "---"
                    + endpoint_manifest("web-1", "web", nse_ns, "169.254.0.0/16"))
    return str(path)


class Watcher:
    """`nsmd get ... -w` in the background; lines read with a deadline."""

    def __init__(self, socket: str, *args: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "nsmd", "get", *args, "-w"],
                                     stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, "NSMD_API_SOCKET": socket})
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def next(self, timeout: float = 10) -> str:
        return self.lines.get(timeout=timeout)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def test_dry_run_aliases_watch_and_delete_by_manifest(daemon, netns, tmp_path):
    d = daemon()
    path = manifest(tmp_path / "web.yaml", netns("nse"))

    dry = d.cli("apply", "-f", path, "--dry-run").stdout.splitlines()
    assert dry == ["NetworkService/web created (dry run)",
                   "NetworkServiceEndpoint/web-1 created (dry run)"]
    assert d.cli_json("get", "ns") == [] and d.cli_json("get", "nse") == []

    watch = Watcher(d.socket, "services")
    try:
        assert watch.next() == "no services"
        time.sleep(0.5)  # the watch is open before the change it must see
        d.cli("apply", "-f", path)
        assert watch.next() == "UPDATED  web"
        assert [s["name"] for s in d.cli_json("get", "service")] == ["web"]
        assert [e["name"] for e in d.cli_json("get", "nse")] == ["web-1"]
        assert d.cli("apply", "-f", path, "--dry-run").stdout.splitlines()[0] == \
            "NetworkService/web configured (dry run)"

        deleted = d.cli("delete", "-f", path).stdout.splitlines()
        assert deleted == ["endpoint/web-1 deleted", "service/web deleted"]  # endpoints first
        assert watch.next() == "DELETED  web"
    finally:
        watch.stop()
    assert d.cli_json("get", "services") == [] and d.cli_json("get", "endpoints") == []


def test_a_refused_dry_run_says_why_and_changes_nothing(daemon, netns, tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("services:\n  - name: web\n    register: ['unix:uid=4242']\n")
    d = daemon(args=("--policy", str(policy)))
    path = manifest(tmp_path / "web.yaml", netns("nse"))
    result = d.cli("apply", "-f", path, "--dry-run", check=False)
    assert result.returncode == 1 and "services[0]" in result.stderr, result.stderr
    assert d.cli_json("get", "services") == []


def test_delete_needs_a_name_or_a_manifest(daemon):
    d = daemon()
    result = d.cli("delete", "service", check=False)
    assert result.returncode == 1 and "KIND NAME, or -f FILE" in result.stderr


def test_status_as_a_table(daemon):
    d = daemon()
    rows = d.cli("status", "-o", "table").stdout.splitlines()
    assert rows[0].split() == ["FIELD", "VALUE"]
    fields = dict(r.split(None, 1) for r in rows[1:] if len(r.split(None, 1)) == 2)
    assert fields["connections"] == "0" and "dataplane.wires" in fields
