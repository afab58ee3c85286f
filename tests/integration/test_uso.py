"""The receive path's UDP coalescing against the real kernel: a USO write to a TUN device
comes out as every datagram, in order, at a UDP socket of the namespace."""

import os
import socket
import threading

from nsmd import netns as namespaces
from nsmd import tundev
from nsmd.fastpath.gro import coalesce
from nsmd.testing.packets import ipv4_flow


def test_the_kernel_takes_a_uso_write_and_delivers_every_datagram(netns):
    ns = netns("uso")
    parts = [bytes([i]) * 64 for i in range(10)] + [b"last"]
    outcome: dict = {}

    def inside():  # enter() moves only this thread
        fds = []
        try:
            namespaces.enter(ns)
            fds, _ = tundev.create(tundev.InterfaceConfig(
                name="uso0", addresses=["100.64.200.1/32"], routes=["100.64.200.0/24"],
                mtu=1500, offload=True), exclusive=True)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind(("100.64.200.1", 5353))
                sock.settimeout(2)
                packets = [ipv4_flow("udp", "100.64.200.2", "100.64.200.1", 40000, 5353, p)
                           for p in parts]
                (frame,) = coalesce(packets, udp=True)
                assert frame[1] == 5        # one USO super-datagram for the eleven
                outcome["written"] = os.write(fds[0], frame) == len(frame)
                outcome["received"] = [sock.recv(2000) for _ in parts]
        except BaseException as err:  # noqa: BLE001 - reported by the test's thread
            outcome["error"] = err
        finally:
            if fds:
                tundev.remove(fds)

    thread = threading.Thread(target=inside, daemon=True)
    thread.start()
    thread.join(10)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["written"]
    assert outcome["received"] == parts
