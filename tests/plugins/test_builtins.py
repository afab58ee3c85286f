"""The built-in functions' stages in an engine, between faked TUN devices (the `wire`
fixture): NAT rewrites and maps back with valid checksums, the rate limiter holds its
bucket, the capture writes a pcap that tcpdump reads."""

from __future__ import annotations

import subprocess
import time

import pytest

from nsmd.errors import ValidationError
from nsmd.model import Connection, ConnectionContext, IPContext
from nsmd.plugins.api import FunctionHost, parse_function
from nsmd.testing.packets import addresses, arrives, checksums_ok, ipv4_flow
from nsmd.testing.sandbox import wait_briefly

CLIENT, ENDPOINT, LAN = "169.254.1.1", "169.254.1.2", "100.64.77.5"


def attach(name: str, config: dict, conn: Connection | None = None,
           host: FunctionHost | None = None):
    conn = conn or Connection(id="c0ffee00-0000", network_service_endpoint_name="e1",
                              context=ConnectionContext(ip_context=IPContext(
                                  src_ip_addrs=[f"{CLIENT}/32"],
                                  dst_ip_addrs=[f"{ENDPOINT}/32"])))
    function = parse_function(name, config, "functions[0]")
    function.host = host
    return function.attach(conn)


def install(wire, part):
    engine, handle, *_ = wire
    engine.set_stages(handle, 0, 0, [part])
    engine.set_stages(handle, 1, 1, [part])


@pytest.mark.parametrize("proto", ["tcp", "udp", "icmp"])
def test_nat_masquerades_behind_the_client_address_and_maps_replies_back(wire, proto):
    _, _, client, endpoint = wire
    nat = attach("nat", {})
    install(wire, nat)
    client.send(ipv4_flow(proto, LAN, ENDPOINT, 40000, 8080, payload=b"q" * 33))
    out = endpoint.recv(4096)
    assert addresses(out)[0] == CLIENT and checksums_ok(out)
    src, _, mapped, _ = addresses(out)
    reply_from = mapped if proto == "icmp" else 8080  # an echo reply carries the id
    endpoint.send(ipv4_flow(proto, ENDPOINT, CLIENT, reply_from, mapped, icmp_type=0))
    back = client.recv(4096)
    assert addresses(back)[:2] == (ENDPOINT, LAN) and checksums_ok(back)
    assert addresses(back)[3 if proto != "icmp" else 2] == 40000
    # the client's own traffic keeps its address and port
    client.send(ipv4_flow(proto, CLIENT, ENDPOINT, 41000, 8080))
    assert addresses(endpoint.recv(4096))[:3] == (CLIENT, ENDPOINT, 41000)
    # a second source on the same port gets another port
    client.send(ipv4_flow(proto, "100.64.77.6", ENDPOINT, 40000, 8080))
    other = endpoint.recv(4096)
    assert addresses(other)[0] == CLIENT and addresses(other)[2] != mapped
    # unknown replies pass untouched; counters
    assert arrives(endpoint, client, ipv4_flow(proto, ENDPOINT, CLIENT, 8080, 12345,
                                               icmp_type=0))
    stats = nat.stats()
    assert stats["translated"] == 3 and stats["replies"] == 1


def test_nat_config_is_checked():
    from nsmd.errors import ValidationError

    with pytest.raises(ValidationError, match="functions\\[0\\].config.address"):
        parse_function("nat", {"address": "nowhere"}, "functions[0]")
    with pytest.raises(ValidationError, match="udp_timeout_s"):
        parse_function("nat", {"udp_timeout_s": 0}, "functions[0]")


def test_the_rate_limiter_holds_its_packet_rate(wire):
    _, _, client, endpoint = wire
    limiter = attach("ratelimit", {"packets_per_s": 200, "burst_packets": 10})
    install(wire, limiter)
    started = time.monotonic()
    for _ in range(400):                      # ~4x the rate, over about half a second
        client.send(ipv4_flow("udp", CLIENT, ENDPOINT, 1, 2))
        time.sleep(0.0012)
    elapsed = time.monotonic() - started
    got = 0
    try:
        while True:
            endpoint.recv(4096)
            got += 1
    except TimeoutError:
        pass
    allowed = 10 + 200 * elapsed              # the burst plus the rate
    assert got <= allowed * 1.1 and got >= allowed * 0.7, (got, allowed)
    stats = limiter.stats()
    assert stats["to_endpoint_passed"] == got
    assert stats["to_endpoint_dropped"] == 400 - got


def test_the_rate_limiter_needs_a_limit():
    from nsmd.errors import ValidationError

    with pytest.raises(ValidationError, match="bits_per_s"):
        parse_function("ratelimit", {}, "functions[0]")


def test_capture_writes_a_bounded_pcap_that_tcpdump_reads(wire, tmp_path):
    _, _, client, endpoint = wire
    capture = attach("capture", {"path": "{endpoint}.pcap", "max_bytes": 2000},
                     host=FunctionHost(str(tmp_path), 10**6))
    install(wire, capture)
    for i in range(30):
        assert arrives(client, endpoint, ipv4_flow("udp", CLIENT, ENDPOINT, 1000 + i, 5300,
                                                   payload=b"z" * 60))
    capture.flush()
    capture.close()
    written = tmp_path / "capture" / "e1-c0ffee00.pcap"
    assert 0 < written.stat().st_size <= 2000
    assert oct(written.stat().st_mode & 0o777) == "0o600"
    out = subprocess.run(["tcpdump", "-n", "-r", str(written)], capture_output=True, text=True)
    lines = out.stdout.strip().splitlines()
    assert out.returncode == 0 and 10 <= len(lines) < 30, out.stderr
    assert f"{CLIENT}.1000 > {ENDPOINT}.5300: UDP, length 60" in lines[0], lines[0]
    assert wait_briefly(lambda: capture.stats()["stopped"] == 1)


@pytest.mark.parametrize("path", ["/etc/shadow.pcap", "../up.pcap", "a/b.pcap", ".hidden.pcap",
                                  "{connection.__class__}.pcap", "{0}.pcap", "cap.txt", ""])
def test_capture_takes_a_file_name_only(path):
    with pytest.raises(ValidationError, match=r"functions\[0\]\.config\.path"):
        parse_function("capture", {"path": path}, "functions[0]")


def test_capture_files_stay_in_the_capture_directory_and_within_the_daemons_limit(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"root's file")
    host = FunctionHost(str(tmp_path / "state"), 500)
    (tmp_path / "state" / "capture").mkdir(parents=True)
    planted = tmp_path / "state" / "capture" / "e1-c0ffee00.pcap"
    planted.symlink_to(victim)                      # a link where the file will go
    conn = Connection(id="c0ffee00-0000", network_service_endpoint_name="../../e1")
    part = attach("capture", {"path": "{endpoint}-{connection}.pcap", "max_bytes": 10**6},
                  conn, host)
    part.close()
    assert victim.read_bytes() == b"root's file"    # unlinked, not followed
    written = tmp_path / "state" / "capture" / ".._.._e1-c0ffee00.pcap"
    assert written.exists() and not written.is_symlink()
    part = attach("capture", {"max_bytes": 10**6}, host=host)
    assert part.writer.max_bytes == 500             # the daemon's limit wins
    part.close()
    # the directory itself may not be a link either
    (tmp_path / "state" / "capture").rename(tmp_path / "elsewhere")
    (tmp_path / "state" / "capture").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError):
        attach("capture", {}, host=host)
