"""The production install (packaging/build, packaging/install) as an operator runs it: a
wheel and sdist built without root, installed into a venv of its own with the runtime
lock only, a daemon run from there for a vWire, and an uninstall that leaves nothing."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import tomllib

import pytest
from packaging.requirements import Requirement

from nsmd.testing.sandbox import endpoint_manifest, host, ping, service_manifest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VERSION = tomllib.load(open(os.path.join(ROOT, "pyproject.toml"), "rb"))["project"]["version"]


def locked_names(path: str) -> set[str]:
    """The packages a hashed requirements file installs here (markers evaluated)."""
    names = set()
    for line in open(path):
        if "==" in line and not line.startswith((" ", "#")):
            req = Requirement(line.rstrip().rstrip("\\"))
            if req.marker is None or req.marker.evaluate():
                names.add(canonical(req.name))
    return names


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def listing(root) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), root)
            for d, dirs, files in os.walk(root) for f in dirs + files}


@pytest.fixture(scope="module")
def wheel():
    """packaging/build run as the user nobody, on a copy of the sources it owns (outside
    pytest's temporary folders, which only root may enter)."""
    work = pathlib.Path(tempfile.mkdtemp(prefix="nsmd-test-build-"))
    try:
        yield build_as_nobody(work)
    finally:
        shutil.rmtree(work)


def build_as_nobody(work: pathlib.Path) -> str:
    subprocess.run([os.path.join(ROOT, "packaging", "source-tree"), str(work / "src")],
                   check=True)
    shutil.chown(work, "nobody")
    os.chmod(work, 0o755)
    for d, dirs, _ in os.walk(work):
        for name in dirs:
            shutil.chown(os.path.join(d, name), "nobody")
    out = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                          str(work / "src" / "packaging" / "build"), str(work / "dist")],
                         capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, HOME="/nonexistent"))
    assert out.returncode == 0, out.stderr[-3000:]
    wheel = out.stdout.strip().splitlines()[-1]
    name = os.path.basename(wheel)
    assert name.startswith(f"nsmd-{VERSION}-") and name.endswith(".whl"), out.stdout
    assert sorted(os.listdir(work / "dist")) == sorted([name, f"nsmd-{VERSION}.tar.gz"])
    return wheel


def test_install_run_a_vwire_and_uninstall(wheel, tmp_path, daemon, netns):
    root = tmp_path / "host"
    for d in ("opt", "etc", "etc/systemd/system"):   # what a host has before
        (root / d).mkdir(parents=True)
    env = dict(os.environ, NSMD_PREFIX=str(root / "opt/nsmd"),
               NSMD_UNIT_DIR=str(root / "etc/systemd/system"),
               NSMD_CONFIG_DIR=str(root / "etc/nsmd"))
    before = listing(root)
    out = subprocess.run([os.path.join(ROOT, "packaging", "install"), wheel], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    prefix = root / "opt/nsmd"
    assert f"installed nsmd {VERSION} in {prefix}" in out.stdout

    nsmd = str(prefix / "bin/nsmd")
    version = subprocess.run([nsmd, "--version"], capture_output=True, text=True, cwd="/")
    assert version.stdout.strip() == f"nsmd {VERSION}" and not version.stderr
    # not editable, only the runtime lock: no test or build tools, nothing from this checkout
    freeze = subprocess.run([str(prefix / "bin/python"), "-m", "pip", "list",
                             "--format=freeze"], capture_output=True, text=True).stdout
    installed = {canonical(line.split("==")[0]) for line in freeze.split()}
    assert installed - {"pip", "setuptools"} == locked_names(
        os.path.join(ROOT, "requirements/runtime.txt")) | {"nsmd"}
    where = subprocess.run([str(prefix / "bin/python"), "-c",
                            "import nsmd.fastpath.engine as e; print(e.__file__)"],
                           capture_output=True, text=True, cwd="/").stdout
    assert where.startswith(str(prefix)), where

    unit = root / "etc/systemd/system/nsmd.service"
    text = unit.read_text()
    assert f"ExecStart={nsmd} run --config {root}/etc/nsmd/nsmd.toml" in text.splitlines()
    for line in ("Type=notify", "WatchdogSec=10", "Restart=on-failure", "NoNewPrivileges=yes"):
        assert line in text.splitlines()
    check = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0 and not check.stderr.strip(), check.stderr

    # the daemon from the install, on the config it wrote (every option commented out)
    d = daemon("prod", nsmd=(nsmd,), args=("--config", str(root / "etc/nsmd/nsmd.toml")))
    nse_ns, nsc_ns = netns("nse"), netns("nsc")
    d.cli("apply", "-f", "-", stdin=service_manifest("icmp-responder") + "---"
          + endpoint_manifest("icmp-responder-1", "icmp-responder", nse_ns))
    conn = d.cli_json("connect", "icmp-responder", "--netns", nsc_ns)
    result = ping(nsc_ns, host(conn["context"]["ip_context"]["dst_ip_addrs"][0]))
    assert result.returncode == 0, result.stdout
    d.cli("close", conn["id"])
    d.stop()

    out = subprocess.run([os.path.join(ROOT, "packaging", "install"), "--uninstall"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert listing(root) == before


def test_a_changed_config_survives_the_uninstall(wheel, tmp_path):
    root = tmp_path / "host"
    env = dict(os.environ, NSMD_PREFIX=str(root / "opt/nsmd"),
               NSMD_UNIT_DIR=str(root / "units"), NSMD_CONFIG_DIR=str(root / "etc"))
    install = os.path.join(ROOT, "packaging", "install")
    subprocess.run([install, wheel], env=env, check=True, capture_output=True, timeout=300)
    config = root / "etc/nsmd.toml"
    config.write_text(config.read_text() + 'log-level = "debug"\n')
    out = subprocess.run([install, "--uninstall"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and f"kept {config}" in out.stdout
    assert config.exists() and not (root / "opt/nsmd").exists()
    assert not (root / "units/nsmd.service").exists()
