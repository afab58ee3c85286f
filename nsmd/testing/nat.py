"""NAT beds for the namespace tests: public hosts on an "internet" bridge (192.0.2.0/24),
and hosts each behind a NAT router of their own (nftables in a router namespace), all in
namespaces the test made:

    internet bridge 192.0.2.0/24
      |-- public host        192.0.2.1, 192.0.2.2, ...
      |-- router 192.0.2.101 == NAT == 198.51.100.1 -- host behind 198.51.100.2
      |-- router 192.0.2.102 == NAT == 203.0.113.1  -- host behind 203.0.113.2

NAT modes (../shared/reference/NAT.md): "masquerade" keeps the source port when free
(endpoint-independent in practice), "random" randomises it (port-dependent). Each router
is also a firewall, as home and cloud NATs are: what comes from outside passes only as
the reply to something sent from inside (or to a forwarded port); the rest is dropped
before conntrack keeps it, so a hole punched from inside opens only its own mapping.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from nsmd.testing.sandbox import quiet_ipv6, sh

INSIDE = ("198.51.100", "203.0.113")   # one inside subnet per router


@dataclasses.dataclass
class Host:
    ns: str
    ip: str                  # its own address
    public_ip: str = ""      # what others see it as ("" = its own: not behind a NAT)
    router: str = ""         # its router's namespace, if behind one


# what a port forward sends on to the host behind: its peer listener and tunnel ports
FORWARDED = ("tcp dport 7000", "udp dport 51820-51899")


def nat_bed(make_netns: Callable[[str], str], public: list[str], behind: list[str],
            mode: str = "masquerade", forward: bool = False) -> dict[str, Host]:
    """{tag: Host} for public hosts and hosts behind a NAT each (at most two); `forward`:
    the routers also forward FORWARDED ports of their outside address to the host."""
    assert mode in ("masquerade", "random") and len(behind) <= len(INSIDE)
    bridge = make_netns("inet")
    quiet_ipv6(bridge)
    sh("ip", "link", "add", "br0", "type", "bridge", netns=bridge)
    sh("ip", "link", "set", "br0", "up", netns=bridge)
    ports = iter(range(1, 100))

    def attach(ns: str, ip: str) -> None:
        port = f"p{next(ports)}"
        sh("ip", "link", "add", "eth0", "type", "veth", "peer", "name", port, netns=ns)
        sh("ip", "link", "set", port, "netns", bridge, netns=ns)
        sh("ip", "link", "set", port, "master", "br0", "up", netns=bridge)
        sh("ip", "addr", "add", f"{ip}/24", "dev", "eth0", netns=ns)
        sh("ip", "link", "set", "eth0", "up", netns=ns)

    hosts = {}
    for i, tag in enumerate(public, start=1):
        ns = make_netns(tag)
        quiet_ipv6(ns)
        attach(ns, f"192.0.2.{i}")
        hosts[tag] = Host(ns, f"192.0.2.{i}")
    for k, tag in enumerate(behind):
        router, ns = make_netns(f"nat-{tag}"), make_netns(tag)
        for space in (router, ns):
            quiet_ipv6(space)
        outside, inside = f"192.0.2.{101 + k}", INSIDE[k]
        attach(router, outside)
        sh("ip", "link", "add", "in0", "type", "veth", "peer", "name", "h0", netns=router)
        sh("ip", "link", "set", "h0", "netns", ns, netns=router)
        sh("ip", "link", "set", "h0", "name", "eth0", netns=ns)
        sh("ip", "addr", "add", f"{inside}.1/24", "dev", "in0", netns=router)
        sh("ip", "link", "set", "in0", "up", netns=router)
        sh("ip", "addr", "add", f"{inside}.2/24", "dev", "eth0", netns=ns)
        sh("ip", "link", "set", "eth0", "up", netns=ns)
        sh("ip", "route", "add", "default", "via", f"{inside}.1", netns=ns)
        sh("sysctl", "-q", "-w", "net.ipv4.ip_forward=1", netns=router)
        masquerade = "masquerade random" if mode == "random" else "masquerade"
        commands = ["add table ip nat",
                    "add chain ip nat post { type nat hook postrouting priority 100 ; }",
                    f"add rule ip nat post oifname eth0 {masquerade}"]
        if forward:
            commands.append("add chain ip nat pre { type nat hook prerouting priority -100 ; }")
            commands += [f"add rule ip nat pre iifname eth0 {ports} dnat to {inside}.2"
                         for ports in FORWARDED]
        commands += [
            "add table inet fw",
            "add chain inet fw input { type filter hook input priority 0 ; policy drop ; }",
            "add rule inet fw input ct state established,related accept",
            "add rule inet fw input iifname in0 accept",
            "add rule inet fw input iifname lo accept",
            "add chain inet fw through { type filter hook forward priority 0 ; policy drop ; }",
            "add rule inet fw through ct state established,related accept",
            "add rule inet fw through iifname in0 accept",
            "add rule inet fw through ct status dnat accept"]
        for command in commands:
            sh("nft", *command.split(), netns=router)
        hosts[tag] = Host(ns, f"{inside}.2", outside, router)
    return hosts
