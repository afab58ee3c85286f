"""Printing results: -o table (for people), json, yaml."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import yaml

FORMATS = ("table", "json", "yaml")


def emit(data: Any, fmt: str, table: Callable[[Any], list[list[str]]] | None) -> str:
    if fmt == "json":
        return json.dumps(data, indent=2)
    if fmt == "yaml":
        return yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip()
    if table is None:
        return yaml.safe_dump(data, sort_keys=False).rstrip()
    return render_table(table(data))


def render_table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True))
             for row in rows)
    return "\n".join(line.rstrip() for line in lines)


def _labels(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in labels.items()) or "-"


def services_table(items: list[dict]) -> list[list[str]]:
    rows = [["NAME", "PAYLOAD", "MATCHES"]]
    rows += [[s["name"], s["payload"], str(len(s["matches"]))] for s in items]
    return rows


def endpoints_table(items: list[dict]) -> list[list[str]]:
    rows = [["NAME", "SERVICES", "LABELS", "URL", "EXPIRES-IN"]]
    for e in items:
        labels = "; ".join(f"{svc}: {_labels(v.get('labels', {}))}"
                           for svc, v in e["network_service_labels"].items()) or "-"
        rows.append([e["name"], ",".join(e["network_service_names"]), labels, e["url"],
                     _expires_in(e.get("expiration_time"))])
    return rows


def connections_table(items: list[dict]) -> list[list[str]]:
    rows = [["ID", "SERVICE", "ENDPOINT", "STATE", "CLIENT", "CLIENT-ADDR", "ENDPOINT-ADDR"]]
    for c in items:
        mech = (c.get("mechanism") or {}).get("parameters", {})
        ipc = c["context"]["ip_context"]
        where = f"{mech.get('netns') or '-'}/{mech.get('name', '?')}"
        rows.append([c["id"], c["network_service"], c["network_service_endpoint_name"],
                     c["state"], where, ",".join(ipc["src_ip_addrs"]) or "-",
                     ",".join(ipc["dst_ip_addrs"]) or "-"])
    return rows


def peers_table(items: list[dict]) -> list[list[str]]:
    rows = [["PEER", "ADDRESS", "WIRES", "LAST-HEARD", "RX", "TX", "ROAMS"]]
    for p in items:
        heard = "-" if p["last_rx_age_s"] is None else f"{p['last_rx_age_s']:.0f}s ago"
        rows.append([p["peer"], p["address"] or "-", str(p["wires"]), heard,
                     _size(p["rx_bytes"]), _size(p["tx_bytes"]), str(p["roams"])])
    return rows


def _size(octets: int) -> str:
    """Bytes as B, KiB, MiB or GiB (the largest unit that leaves at least 1)."""
    power = 0
    while power < 3 and octets >= 1024 ** (power + 1):
        power += 1
    if power == 0:
        return f"{octets} B"
    return f"{octets / 1024 ** power:.1f} {('KiB', 'MiB', 'GiB')[power - 1]}"


def event_line(event: dict) -> str:
    conns = event.get("connections", {})
    if not conns:
        return f"{event['type']} (no connections)"
    return "\n".join(
        f"{event['type']:<22} {cid}  {c['network_service']} -> "
        f"{c['network_service_endpoint_name'] or '-'}  {c['state']}"
        for cid, c in conns.items())


def _expires_in(stamp: str | None) -> str:
    if not stamp:
        return "-"
    from nsmd.model.codec import parse_time
    return f"{parse_time(stamp, 'expiration_time') - time.time():.0f}s"


def status_table(status: dict) -> list[list[str]]:
    """The daemon's status as FIELD VALUE rows (nested parts flattened with dots)."""
    rows = [["FIELD", "VALUE"]]

    def add(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                add(f"{prefix}.{key}" if prefix else key, inner)
        elif isinstance(value, list):
            for i, inner in enumerate(value):
                add(f"{prefix}[{i}]", inner)
        else:
            rows.append([prefix, "-" if value is None else str(value)])

    add("", status)
    return rows
