"""Daemons with identities from a (test) SPIFFE Workload API: peering, rotation."""

from __future__ import annotations

import asyncio
import socket

import pytest
from cryptography import x509

from nsmd.config import Config
from nsmd.daemon import Daemon
from nsmd.errors import NsmdError
from nsmd.identity.ca import init_ca
from nsmd.identity.workload import WorkloadIdentity
from nsmd.model import NetworkServiceEndpoint
from nsmd.testing.workload_api import WorkloadApiServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ca(tmp_path):
    state = str(tmp_path / "ca")
    init_ca(state, "wl.test")
    return state


@pytest.fixture
def workload_apis(ca, tmp_path):
    servers = []

    def make(name: str) -> WorkloadApiServer:
        server = WorkloadApiServer(ca, f"spiffe://wl.test/node/{name}",
                                 str(tmp_path / f"{name}.sock"), str(tmp_path)).start()
        servers.append(server)
        return server
    yield make
    for server in servers:
        server.stop()


async def test_the_workload_api_svid_is_verified_and_rotates(workload_apis):
    api = workload_apis("a")
    identity = WorkloadIdentity(api.url)
    seen = []
    identity.on_update.append(seen.append)
    try:
        first = await identity.start()
        assert str(first.spiffe_id) == "spiffe://wl.test/node/a"
        api.rotate()
        for _ in range(50):
            await asyncio.sleep(0.1)
            if seen:
                break
        assert seen and seen[0].chain[0].serial_number != first.chain[0].serial_number
        assert identity.svid is seen[0]
    finally:
        identity.close()


async def test_daemons_peer_with_workload_api_identities_across_rotation(workload_apis,
                                                                         tmp_path):
    api_a, api_b = workload_apis("a"), workload_apis("b")
    port_a, port_b = free_port(), free_port()
    a = Daemon(Config(name="a", state_dir=str(tmp_path / "sa"), api_socket=str(tmp_path / "a"),
                      listen=f"127.0.0.1:{port_a}", tunnel_port=free_port(),
                      spiffe_socket=api_a.url).validate())
    b = Daemon(Config(name="b", state_dir=str(tmp_path / "sb"), api_socket=str(tmp_path / "b"),
                      listen=f"127.0.0.1:{port_b}", tunnel_port=free_port(),
                      registry=f"https://127.0.0.1:{port_a}", spiffe_socket=api_b.url
                      ).validate())
    await a.start()
    await b.start()
    try:
        await b.registry.register_endpoint(NetworkServiceEndpoint(
            name="e1", network_service_names=["s"], url=b.url))
        await _eventually(lambda: "e1" in a.registry.endpoints)
        assert a.registry.endpoints["e1"].path_ids == ["spiffe://wl.test/node/b"]

        old_serial = a.id.describe()["serial"]
        api_a.rotate()
        await _eventually(lambda: a.id.describe()["serial"] != old_serial)
        # a new handshake gets the new certificate ...
        assert await _served_serial(port_a, b) == int(a.id.describe()["serial"], 16)
        # ... and peering goes on: the mirror follows, writes work
        await b.registry.register_endpoint(NetworkServiceEndpoint(
            name="e2", network_service_names=["s"], url=b.url))
        await _eventually(lambda: "e2" in a.registry.endpoints)
    finally:
        await b.stop()
        await a.stop()


async def _served_serial(port: int, client: Daemon) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client.id.tls.client())
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    return x509.load_der_x509_certificate(der).serial_number


async def _eventually(predicate, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_an_unreachable_workload_api_is_one_clear_error(tmp_path):
    identity = WorkloadIdentity(f"unix://{tmp_path}/none.sock")
    identity_start = identity.start()
    with pytest.raises(NsmdError, match="no SVID from the Workload API"):
        await asyncio.wait_for(identity_start, 30)
