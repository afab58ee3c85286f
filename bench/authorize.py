"""What zero trust costs: authorizing one peer request, and whole cross-host connects.

- in process, with real ES256 tokens from a development CA: the authorize element (NSM's
  default policies plus a --policy rule) over the path a cross-host Request carries (2
  segments up to the caller) and over a 6-hop path (composition), microseconds per
  request, p50/p99; and the token operations it is made of (sign, read, verify);
- two hosts in network namespaces: sequential cross-host connect + close, p50/p99 (each
  connect signs four tokens and is authorized at the endpoint's host).

Writes bench/results/authorize.json. Needs root for the two-host part (namespaces
nsmdb-<random>-*, removed at the end). NSM spends ~100 ms per authorize (OPA, dk8s#3053).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import tempfile
import time

from benchlib import p50_p99, save, setup_latency_ms

from nsmd.caller import CALLER, peer_caller
from nsmd.identity import tokens
from nsmd.identity.ca import init_ca, issue_svid
from nsmd.identity.files import FileIdentity
from nsmd.identity.identity import Identity
from nsmd.identity.svid import load_svid_dir
from nsmd.manager.authorize import Authorize
from nsmd.manager.begin import Begin
from nsmd.manager.chain import Chain
from nsmd.model import Connection, Mechanism, NetworkServiceRequest, Path, PathSegment
from nsmd.policy import Policy
from nsmd.testing.fake_clock import FakeClock
from nsmd.testing.sandbox import (
    DaemonProc,
    Namespaces,
    endpoint_manifest,
    service_manifest,
    trust_domain,
    underlay,
)

TD = "bench.nsmd"
SELF = f"spiffe://{TD}/node/self"
GOAL_MS = 1.0


class Hosted:
    def spec(self, name: str):
        return object() if name == "e1" else None


def requests(svids: list, count: int, now: float) -> list[NetworkServiceRequest]:
    """`count` Requests whose path runs through `svids` in order, the last one calling."""
    ids = [str(s.spiffe_id) for s in svids]
    out = []
    for n in range(count):
        segments = [PathSegment(name="nsc", id=f"c{n}", token=tokens.sign(  # the origin's
            svids[0], ids[0], now, 600, with_chain=True)[0])]
        for i, svid in enumerate(svids):
            aud = ids[i + 1] if i + 1 < len(ids) else SELF
            segments.append(PathSegment(name=f"hop{i}", id=f"h{i}-{n}",
                                        token=tokens.sign(svid, aud, now, 600)[0]))
        conn = Connection(id=segments[-1].id, network_service="svc",
                          network_service_endpoint_name="e1",
                          path=Path(len(segments) - 1, segments))
        out.append(NetworkServiceRequest(connection=conn, mechanism_preferences=[Mechanism(
            cls="REMOTE", type="NSMD_UDP", parameters={"src_ip": "192.0.2.1"})]))
    return out


async def authorize_cost(svids: list, count: int, identity_dir: str) -> dict:
    """Per request, as the endpoint's daemon does it: its Identity checks the origin's
    certificate chain (remembered after the first request of each origin)."""
    clock = FakeClock(start=time.time())
    policy = Policy.parse({"services": [{"name": "svc", "request": [
        f"spiffe://{TD}/node/*"]}]}, "bench")
    identity = Identity(FileIdentity(identity_dir))
    await identity.start()
    chain = Chain(Authorize("self", Begin(), Hosted(), policy, clock, lambda: SELF,
                            lambda: frozenset({TD}), identity.trust_chain))  # type: ignore
    todo = requests(svids, count, clock.time())
    caller = peer_caller(svids[-1].chain[0], str(svids[-1].spiffe_id), "192.0.2.1")
    token = CALLER.set(caller)
    times = []
    try:
        for request in todo:
            t0 = time.perf_counter_ns()
            await chain.request(request)
            times.append((time.perf_counter_ns() - t0) / 1000)
    finally:
        CALLER.reset(token)
        identity.close()
    return {"segments": len(svids) + 1, "us": p50_p99(times)}


def token_costs(svid, count: int) -> dict:
    now = time.time()
    token = tokens.sign(svid, SELF, now, 600)[0]
    key = svid.chain[0].public_key()
    out = {}
    for name, op in (("sign", lambda: tokens.sign(svid, SELF, now, 600)),
                     ("read", lambda: tokens.read(token)),
                     ("verify", lambda: tokens.verify(token, key))):
        times = []
        for _ in range(count):
            t0 = time.perf_counter_ns()
            op()
            times.append((time.perf_counter_ns() - t0) / 1000)
        out[name] = p50_p99(times)
    return out


def cross_host_connects(work: str, count: int) -> dict:
    spaces = Namespaces(f"nsmdb-{secrets.token_hex(3)}")
    make = spaces.make
    daemons: list[DaemonProc] = []
    try:
        (a, ip_a), (b, ip_b) = underlay(make, ["a", "b"]).items()
        ids = trust_domain(work, TD, [f"spiffe://{TD}/node/a", f"spiffe://{TD}/node/b"])
        near = DaemonProc(os.path.join(work, "a"), "a", a, (
            "--listen", f"{ip_a}:7000", "--identity-dir", ids[f"spiffe://{TD}/node/a"]))
        far = DaemonProc(os.path.join(work, "b"), "b", b, (
            "--listen", f"{ip_b}:7000", "--registry", f"https://{ip_a}:7000",
            "--registry-id", f"spiffe://{TD}/node/a",
            "--identity-dir", ids[f"spiffe://{TD}/node/b"]))
        for d in (near, far):
            os.makedirs(d.state_dir)
            daemons.append(d.start())
        nse, nsc = make("nse"), make("nsc")
        far.cli("apply", "-f", "-", stdin=service_manifest("bench") + "---" +
                endpoint_manifest("bench-1", "bench", nse, "100.64.90.0/24"))
        deadline = time.monotonic() + 10
        while not near.cli_json("get", "endpoints") and time.monotonic() < deadline:
            time.sleep(0.1)
        return setup_latency_ms(near, "bench", nsc, count)
    finally:
        for d in daemons:
            d.stop()
        spaces.cleanup()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000, help="authorizations timed")
    ap.add_argument("--connects", type=int, default=50, help="sequential cross-host connects")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="nsmd-bench-")
    try:
        ca = os.path.join(work, "ca")
        init_ca(ca, TD)
        svids = [load_svid_dir(issue_svid(ca, f"spiffe://{TD}/node/h{i}",
                                          os.path.join(work, f"h{i}"))) for i in range(5)]
        own = issue_svid(ca, SELF, os.path.join(work, "self"))
        two = asyncio.run(authorize_cost(svids[:1], args.requests, own))
        six = asyncio.run(authorize_cost(svids, args.requests, own))
        costs = token_costs(svids[0], args.requests)
        connect = cross_host_connects(work, args.connects)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"authorize_cross_host": two, "authorize_6_hops": six, "tokens_us": costs,
              "cross_host_connect_ms": connect, "goal_ms": GOAL_MS}
    print(f"authorize, {two['segments']} segments: p50 {two['us']['p50']} us, "
          f"p99 {two['us']['p99']} us")
    print(f"authorize, {six['segments']} segments: p50 {six['us']['p50']} us, "
          f"p99 {six['us']['p99']} us")
    print("tokens (us p50): " + ", ".join(f"{k} {v['p50']}" for k, v in costs.items()))
    print(f"cross-host connect with tokens: p50 {connect['p50']} ms, p99 {connect['p99']} ms")
    print(f"results: {save('authorize', result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
