"""Prometheus metrics of one daemon (its own registry, so several daemons can share a process).

Request outcomes are counted by the metrics element (per service: registered names only,
so callers cannot grow the label set); connection, packet, byte and drop counts, per
service and per peer daemon too, and heal attempts are read from the manager and the fast
path when /metrics is scraped, as are the SVID's and the trust bundle's expiry; process_*
and python_* come from prometheus-client's own collectors, nsmd_build_info says which
nsmd this is. Served on the API socket, and
with --metrics-listen over plain HTTP for a Prometheus to scrape.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from nsmd import __version__


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        Info("nsmd_build", "This nsmd", registry=self.registry).info(
            {"version": __version__, "python": platform.python_version()})
        self.requests = Counter(
            "nsmd_requests", "Manager requests and closes by outcome and service",
            ["op", "result", "service"], registry=self.registry)
        self.request_seconds = Histogram(
            "nsmd_request_duration_seconds", "Time to serve a Request, end to end",
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0))
        self.rekeys = Counter("nsmd_tunnel_rekeys", "Tunnel keypairs replaced (either side)",
                              registry=self.registry)
        self.quota_refusals = Counter("nsmd_quota_refusals", "Calls refused by a quota",
                                      ["quota"], registry=self.registry)
        self.denials = Counter("nsmd_denials", "Calls refused by a policy (403), by its name",
                               ["policy"], registry=self.registry)

    def add_live_source(self, connections: Callable[[], int],
                        dataplane_totals: Callable[[], dict[str, Any]]) -> None:
        self.registry.register(_LiveCollector(connections, dataplane_totals))

    def add_mesh_source(self, services: Callable[[], dict[str, int]],
                        peers: Callable[[], list[dict]],
                        heals: Callable[[], tuple[dict[str, int], dict[str, int], int]]) -> None:
        """services() -> vWires served per service; peers() -> Dataplane.peers();
        heals() -> (healed by how, failed attempts by how, connections healing now)."""
        self.registry.register(_MeshCollector(services, peers, heals))

    def add_identity_source(self, expiries: Callable[[], tuple[float, float]]) -> None:
        """expiries() -> (the SVID's not-after, the earliest CA of the bundle's), epoch s."""
        self.registry.register(_IdentityCollector(expiries))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _LiveCollector:
    def __init__(self, connections: Callable[[], int],
                 dataplane_totals: Callable[[], dict[str, Any]]):
        self._connections = connections
        self._totals = dataplane_totals

    def describe(self):
        return []

    def collect(self):
        yield GaugeMetricFamily("nsmd_connections", "vWires this daemon serves",
                                value=self._connections())
        totals = self._totals()
        yield GaugeMetricFamily("nsmd_dataplane_wires", "Wires in the packet engine",
                                value=totals["wires"])
        packets = CounterMetricFamily("nsmd_packets", "Packets moved by the fast path",
                                      labels=["direction"])
        packets.add_metric(["rx"], totals["rx_packets"])
        packets.add_metric(["tx"], totals["tx_packets"])
        yield packets
        octets = CounterMetricFamily("nsmd_bytes", "Bytes moved by the fast path",
                                     labels=["direction"])
        octets.add_metric(["rx"], totals["rx_bytes"])
        octets.add_metric(["tx"], totals["tx_bytes"])
        yield octets
        drops = CounterMetricFamily("nsmd_drops", "Packets dropped by the fast path",
                                    labels=["reason"])
        for reason, count in totals["drops"].items():
            drops.add_metric([reason], count)
        drops.add_metric(["read_error"], totals["read_errors"])
        yield drops
        yield CounterMetricFamily("nsmd_udp_gso_sends", "Tunnel sends carrying several "
                                  "datagrams (UDP GSO)", value=totals.get("udp_gso_sends", 0))
        yield CounterMetricFamily("nsmd_udp_gro_receives", "Tunnel receives carrying several "
                                  "datagrams (UDP GRO)", value=totals.get("udp_gro_receives", 0))
        stray = CounterMetricFamily("nsmd_udp_drops", "Tunnel datagrams that named no vWire",
                                    labels=["reason"])
        for reason, count in totals["udp_drops"].items():
            stray.add_metric([reason], count)
        yield stray


class _MeshCollector:
    def __init__(self, services: Callable[[], dict[str, int]], peers: Callable[[], list[dict]],
                 heals: Callable[[], tuple[dict[str, int], dict[str, int], int]]):
        self._services = services
        self._peers = peers
        self._heals = heals

    def describe(self):
        return []

    def collect(self):
        served = GaugeMetricFamily("nsmd_service_connections", "vWires served, per service",
                                   labels=["service"])
        for service, count in sorted(self._services().items()):
            served.add_metric([service], count)
        yield served
        peers = self._peers()
        wires = GaugeMetricFamily("nsmd_peer_wires", "Live tunnels with each peer daemon",
                                  labels=["peer"])
        heard = GaugeMetricFamily("nsmd_peer_last_receive_age_seconds",
                                  "Time since the peer was last heard on any live tunnel",
                                  labels=["peer"])
        octets = CounterMetricFamily("nsmd_peer_bytes", "Tunnel payload bytes to (tx) and "
                                     "from (rx) each peer daemon", labels=["peer", "direction"])
        packets = CounterMetricFamily("nsmd_peer_packets", "Tunnel packets to (tx) and from "
                                      "(rx) each peer daemon", labels=["peer", "direction"])
        roams = CounterMetricFamily("nsmd_peer_roams", "Times a peer's tunnel address moved "
                                    "(NAT rebinding, roaming)", labels=["peer"])
        for row in peers:
            peer = row["peer"]
            wires.add_metric([peer], row["wires"])
            if row["last_rx_age_s"] is not None:
                heard.add_metric([peer], row["last_rx_age_s"])
            for direction in ("rx", "tx"):
                octets.add_metric([peer, direction], row[f"{direction}_bytes"])
                packets.add_metric([peer, direction], row[f"{direction}_packets"])
            roams.add_metric([peer], row["roams"])
        yield from (wires, heard, octets, packets, roams)
        healed, failed, healing = self._heals()
        heals = CounterMetricFamily("nsmd_heal_attempts", "Heal attempts by how (restore the "
                                    "path, reselect an endpoint) and result",
                                    labels=["how", "result"])
        for how in sorted(healed):
            heals.add_metric([how, "ok"], healed[how])
            heals.add_metric([how, "failed"], failed.get(how, 0))
        yield heals
        yield GaugeMetricFamily("nsmd_healing", "Connections being healed now", value=healing)


class _IdentityCollector:
    def __init__(self, expiries: Callable[[], tuple[float, float]]):
        self._expiries = expiries

    def describe(self):
        return []

    def collect(self):
        svid, ca = self._expiries()
        yield GaugeMetricFamily("nsmd_svid_expiry_timestamp_seconds",
                                "When this daemon's SVID expires (renewal must come first)",
                                value=svid)
        yield GaugeMetricFamily("nsmd_bundle_ca_expiry_timestamp_seconds",
                                "When the earliest CA of the trust bundle expires", value=ca)
