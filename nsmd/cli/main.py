"""`nsmd`: argv -> one command. Failures print one line on stderr and exit non-zero."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import urllib.parse
import warnings
from collections.abc import Iterator
from typing import Any

from nsmd import __version__, defaults
from nsmd.cli import options, output
from nsmd.cli.client import Client, ClientError
from nsmd.errors import NsmdError

DEFAULT_SVID_HOURS = 24 * 90.0   # nsmd.identity.ca's default: development certificates
KINDS = {   # what `delete` takes; `get` takes these and connections too
    "service": "services", "services": "services", "networkservice": "services", "ns": "services",
    "endpoint": "endpoints", "endpoints": "endpoints", "networkserviceendpoint": "endpoints",
    "nse": "endpoints",
}
LISTED = {**KINDS, "connection": "connections", "connections": "connections",
          "conn": "connections", "peer": "peers", "peers": "peers"}


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage + message
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> Parser:
    p = Parser(prog="nsmd", description="Network Service Mesh for Linux hosts: the daemon and "
               "its client commands.")
    p.add_argument("--version", action="version", version=f"nsmd {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser,
                           metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon (manager + registry + fast path)",
                         description="Run the daemon. Every option can also come from the TOML "
                         "file (--config or NSMD_CONFIG) and from NSMD_<OPTION> variables, "
                         "e.g. NSMD_STATE_DIR.", epilog=options.tuning_epilog())
    run.add_argument("--config", metavar="FILE", help="TOML file with any of the options below")
    run.add_argument("--check-config", action="store_true",
                     help="check the configuration, print it with where each value came "
                     "from, and exit (0: it would start)")
    options.add_run_options(run)

    def client_parser(name: str, help_text: str, **kw: Any) -> Parser:
        cp = sub.add_parser(name, help=help_text, description=help_text, **kw)
        cp.add_argument("--api-socket", metavar="PATH",
                        help="the daemon's API socket (env NSMD_API_SOCKET)")
        return cp

    apply = client_parser("apply", "register the resources of NSM manifests (all or none)")
    apply.add_argument("-f", "--filename", action="append", required=True, metavar="FILE",
                       help="YAML manifest ('-' for stdin); repeatable")
    apply.add_argument("--dry-run", action="store_true",
                       help="check everything (manifests, policies) and say what would "
                       "change, changing nothing")

    delete = client_parser("delete", "unregister services or endpoints, by name or manifest")
    delete.add_argument("kind", nargs="?", choices=sorted(KINDS), metavar="KIND",
                        help="service or endpoint (or ns, nse, ...)")
    delete.add_argument("name", nargs="?")
    delete.add_argument("-f", "--filename", action="append", metavar="FILE",
                        help="delete what these manifests name ('-' for stdin); repeatable")

    get = client_parser("get", "list services, endpoints, connections or peers")
    get.add_argument("what", choices=sorted(LISTED),
                     metavar="services|endpoints|connections|peers",
                     help="also service, ns, endpoint, nse, connection, conn, peer")
    get.add_argument("name", nargs="?", help="only this one")
    get.add_argument("-o", "--output", choices=output.FORMATS, default="table")
    get.add_argument("-w", "--watch", action="store_true",
                     help="then every change as it happens (until interrupted)")

    connect = client_parser("connect", "request a vWire to a network service")
    connect.add_argument("service")
    connect.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                         help="client label used by the service's matches; repeatable")
    connect.add_argument("--netns", default="", metavar="NAME",
                         help="namespace for the client's interface (default: the daemon's)")
    connect.add_argument("--ifname", default="", metavar="IF",
                         help="client interface name (default: nsm0, nsm1, ...)")
    connect.add_argument("--client-name", default="", metavar="NAME",
                         help="the client's path segment name (default nsc@NETNS); on a "
                         "vL3 service its DNS name is NAME.SERVICE (default NETNS.SERVICE)")
    connect.add_argument("--timeout", type=float, metavar="SECONDS",
                         help="keep trying this long while no endpoint can serve the "
                              f"request (default {defaults.CONNECT_TIMEOUT_S:g}, as NSM's "
                              "client; 0: try once)")
    connect.add_argument("-o", "--output", choices=output.FORMATS, default="table")

    close = client_parser("close", "close a vWire")
    close.add_argument("connection_id", metavar="CONNECTION_ID")

    monitor = client_parser("monitor", "stream connection events")
    monitor.add_argument("--connection", metavar="ID")
    monitor.add_argument("--service", metavar="NAME")
    monitor.add_argument("-o", "--output", choices=("table", "json"), default="table")

    status = client_parser("status", "show the daemon's state")
    status.add_argument("-o", "--output", choices=output.FORMATS, default="yaml")

    ca = sub.add_parser("ca", help="a development trust domain (CA and SVIDs)",
                        description="Create a development trust domain and issue X.509 SVIDs, "
                        "so first runs and tests need no SPIRE.")
    ca_sub = ca.add_subparsers(dest="ca_command", required=True, parser_class=Parser,
                               metavar="init|issue|renew|print|verify")
    ca_init = ca_sub.add_parser("init", help="create the CA of a trust domain")
    ca_init.add_argument("--state-dir", required=True, metavar="DIR",
                         help="where the CA goes (DIR/ca/, mode 0700)")
    ca_init.add_argument("--trust-domain", required=True, metavar="TD", help="e.g. example.org")
    ca_issue = ca_sub.add_parser("issue", help="issue an SVID: svid.pem, svid.key, bundle.pem")
    ca_issue.add_argument("spiffe_id", metavar="SPIFFE_ID", help="spiffe://TD/path")
    ca_issue.add_argument("--state-dir", required=True, metavar="DIR",
                          help="the directory given to `ca init`")
    ca_issue.add_argument("--out", required=True, metavar="DIR", help="where the files go")
    ca_issue.add_argument("--hours", type=float, default=DEFAULT_SVID_HOURS,
                          help=f"lifetime (default {DEFAULT_SVID_HOURS:g}: 90 days)")
    ca_renew = ca_sub.add_parser("renew", help="a new SVID for the same SPIFFE ID into an "
                                 "SVID directory (a daemon using it reloads it live)")
    ca_renew.add_argument("directory", metavar="DIR", help="svid.pem, svid.key, bundle.pem")
    ca_renew.add_argument("--state-dir", required=True, metavar="DIR",
                          help="the directory given to `ca init`")
    ca_renew.add_argument("--hours", type=float, default=DEFAULT_SVID_HOURS,
                          help=f"lifetime (default {DEFAULT_SVID_HOURS:g}: 90 days)")
    for name, text in (("print", "show an SVID directory's ID, validity and CAs"),
                       ("verify", "check that its SVID is valid now and chains to its bundle")):
        ca_sub.add_parser(name, help=text, description=text).add_argument(
            "directory", metavar="DIR", help="svid.pem, svid.key, bundle.pem")

    doctor = sub.add_parser("doctor", help="check this host and configuration: one line per "
                            "check, ok / warn / fail, with the fix", description="Checks "
                            "what nsmd needs here (TUN, privileges, namespaces, AES, the "
                            "SVID, the daemon, the registry and the clock); exit 0 all ok, "
                            "1 a warning, 2 a failure.")
    doctor.add_argument("--config", metavar="FILE", help="the daemon's TOML file")
    doctor.add_argument("--api-socket", metavar="PATH",
                        help="the daemon's API socket (env NSMD_API_SOCKET)")
    doctor.add_argument("-o", "--output", choices=("table", "json"), default="table")

    demo = sub.add_parser("demo", help="run a daemon, an endpoint and a client in namespaces "
                          "and ping through the vWire", description="A self-contained tour: "
                          "starts a daemon with its own state, creates two namespaces, "
                          "connects them through a vWire, pings, cleans up.")
    demo.add_argument("--count", type=int, default=3, help="pings to send (default 3)")

    completion = sub.add_parser(
        "completion", help="print a shell completion script", description="Prints the "
        "completion script of SHELL, e.g. `nsmd completion bash > "
        "/etc/bash_completion.d/nsmd`, or `source <(nsmd completion zsh)` in ~/.zshrc.")
    completion.add_argument("shell", choices=("bash", "zsh"), metavar="SHELL",
                            help="bash or zsh")
    return p


def hide_dependency_warnings() -> None:
    """Keep the deprecation notices that dependencies raise (py-spiffe importing DSA from a
    newer cryptography, say) off users' terminals and logs: they are for nsmd's developers,
    who see them in the test suite or with -W/PYTHONWARNINGS, which this leaves alone.
    Only deprecation categories, only from modules outside nsmd."""
    if sys.warnoptions:
        return
    from cryptography.utils import CryptographyDeprecationWarning

    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning,
                     CryptographyDeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=r"(?!nsmd(\.|$))")


def main(argv: list[str] | None = None) -> int:
    hide_dependency_warnings()
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ClientError, NsmdError) as err:
        print(f"nsmd {args.command}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def cmd_run(args: argparse.Namespace) -> int:
    import uvloop

    from nsmd import config, logs
    from nsmd.cli import config_template
    from nsmd.daemon import run

    cli = options.given(args)
    if args.check_config:
        print(config_template.effective(*config.load_with_sources(cli, args.config)), end="")
        return 0
    cfg = config.load(cli, args.config)
    logs.setup(cfg.log_level, cfg.log_format)
    uvloop.run(run(cfg))
    # Stopped, and everything is written: exit without freeing the heap object by object,
    # which takes seconds with 100,000 endpoints while systemd waits for the exit.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _documents(filenames: list[str]) -> list[dict]:
    from nsmd.manifest import load_yaml_documents

    docs = []
    for name in filenames:
        try:
            text = sys.stdin.read() if name == "-" else open(name, encoding="utf-8").read()
        except OSError as err:
            raise ClientError(f"cannot read {name}: {err.strerror}") from None
        docs += load_yaml_documents(text, name)
    return docs


def cmd_apply(args: argparse.Namespace) -> int:
    docs = _documents(args.filename)
    url = "/v1/apply" + ("?dry_run=true" if args.dry_run else "")
    result = Client(args.api_socket).call("POST", url, {"documents": docs})
    for item in result["applied"]:
        waiting = item.get("waiting_for_netns")
        note = f" (registered once network namespace {waiting} exists)" if waiting else ""
        print(f"{item['kind']}/{item['name']} {item['action']}{note}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    if args.filename:
        if args.kind or args.name:
            raise ClientError("delete: either KIND NAME or -f FILE, not both")
        # endpoints before services: a service goes once nothing offers it
        named = [(KINDS[str(d.get("kind", "")).lower()], str(d.get("metadata", {}).get("name")))
                 for d in _documents(args.filename) if str(d.get("kind", "")).lower() in KINDS]
        targets = sorted(named, key=lambda kn: kn[0] != "endpoints")
    elif args.kind and args.name:
        targets = [(KINDS[args.kind], args.name)]
    else:
        raise ClientError("delete: KIND NAME, or -f FILE (see nsmd delete --help)")
    client = Client(args.api_socket)
    for kind, name in targets:
        client.call("DELETE", f"/v1/{kind}/{_quote(name)}")
        print(f"{kind[:-1]}/{name} deleted")
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    what = LISTED[args.what]
    if what == "peers" and args.watch:
        raise ClientError("get peers: counters have no changes to watch; run it again, or "
                          "scrape --metrics-listen (nsmd_peer_*)")
    client = Client(args.api_socket)
    if what == "peers":
        items = [p for p in client.call("GET", "/v1/peers")
                 if not args.name or p["peer"] == args.name]
    elif args.name:
        items = [client.call("GET", f"/v1/{what}/{_quote(args.name)}")]
    else:
        items = client.call("GET", f"/v1/{what}")
    tables = {"services": output.services_table, "endpoints": output.endpoints_table,
              "connections": output.connections_table, "peers": output.peers_table}
    if args.output == "table" and not items:
        print(f"no {what}")
    else:
        print(output.emit(items, args.output, tables[what]), flush=True)
    if args.watch:
        for line in _changes(client, what, args.name, args.output):
            print(line, flush=True)
    return 0


def _changes(client: Client, what: str, name: str | None, fmt: str) -> Iterator[str]:
    """What changes after the listing just printed: the stream's own snapshot (a
    registry watch's items up to its synced marker, the monitor's initial state) skipped."""
    import json

    if what == "connections":
        url = "/v1/monitor" + (f"?connection={_quote(name)}" if name else "")
    else:
        url = f"/v1/{what}?watch=true" + (f"&name={_quote(name)}" if name else "")
    in_snapshot = what != "connections"   # a registry watch's snapshot ends at its marker
    for event in client.stream(url):
        if event.get("synced"):
            in_snapshot = False
            continue
        if in_snapshot or event.get("type") == "INITIAL_STATE_TRANSFER":
            continue
        if fmt == "json":
            yield json.dumps(event)
        elif what == "connections":
            yield output.event_line(event)
        else:
            yield f"{'DELETED' if event['deleted'] else 'UPDATED'}  {event['item']['name']}"


def cmd_connect(args: argparse.Namespace) -> int:
    from nsmd.api.codec import query_labels

    body = {"network_service": args.service, "labels": query_labels(args.label, "--label"),
            "netns": args.netns, "ifname": args.ifname, "client": args.client_name}
    if args.timeout is not None:
        body["timeout_s"] = args.timeout
    conn = Client(args.api_socket).call("POST", "/v1/connections", body)
    print(output.emit(conn, args.output, lambda c: output.connections_table([c])))
    return 0


def cmd_close(args: argparse.Namespace) -> int:
    Client(args.api_socket).call("DELETE", f"/v1/connections/{_quote(args.connection_id)}")
    print(f"connection {args.connection_id} closed")
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    import json

    query = {k: v for k, v in (("connection", args.connection), ("service", args.service)) if v}
    url = "/v1/monitor" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    for event in Client(args.api_socket).stream(url):
        line = json.dumps(event) if args.output == "json" else output.event_line(event)
        print(line, flush=True)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    print(output.emit(Client(args.api_socket).call("GET", "/v1/status"), args.output,
                      output.status_table))
    return 0


def cmd_ca(args: argparse.Namespace) -> int:
    import datetime as dt

    from nsmd.identity import ca

    if args.ca_command == "init":
        print(f"CA of trust domain {args.trust_domain} created in "
              f"{ca.init_ca(args.state_dir, args.trust_domain)}")
        return 0
    if args.ca_command == "print":
        print("\n".join(ca.describe_svid(args.directory)))
        return 0
    if args.ca_command == "verify":
        print(ca.verify_svid(args.directory))
        return 0
    if not 0 < args.hours <= 24 * 3650:
        raise NsmdError("--hours: expected a lifetime between 0 and 87600 hours")
    lifetime = dt.timedelta(hours=args.hours)
    if args.ca_command == "renew":
        ca.renew_svid(args.state_dir, args.directory, lifetime)
        print(f"SVID in {args.directory} renewed: {ca.verify_svid(args.directory)}")
        return 0
    out = ca.issue_svid(args.state_dir, args.spiffe_id, args.out, lifetime)
    print(f"SVID for {args.spiffe_id} written to {out} (svid.pem, svid.key, bundle.pem)")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from nsmd.cli.doctor import exit_code, run_checks

    checks = run_checks(args.config, args.api_socket or os.environ.get("NSMD_API_SOCKET"))
    if args.output == "json":
        print(json.dumps([dataclasses.asdict(c) for c in checks], indent=2))
    else:
        print("\n".join(c.line() for c in checks))
    return exit_code(checks)


def cmd_demo(args: argparse.Namespace) -> int:
    from nsmd.cli.demo import run_demo

    return run_demo(args.count)


def cmd_completion(args: argparse.Namespace) -> int:
    from nsmd.cli.completion import script

    print(script(build_parser(), args.shell))
    return 0


def _quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")


COMMANDS = {"run": cmd_run, "apply": cmd_apply, "delete": cmd_delete, "get": cmd_get,
            "connect": cmd_connect, "close": cmd_close, "monitor": cmd_monitor,
            "status": cmd_status, "ca": cmd_ca, "doctor": cmd_doctor, "demo": cmd_demo,
            "completion": cmd_completion}
