"""Selection against NSM's own manifests (tests/data/nsm) and NSM's matchutils semantics."""

import pathlib

from nsmd.manifest import load_yaml_documents, parse_documents
from nsmd.model import NetworkServiceEndpoint, ServiceLabels
from nsmd.selection import NO_VALUE, candidates, is_subset, render

NSM = pathlib.Path(__file__).parent / "data" / "nsm"


def service(name):
    return parse_documents(load_yaml_documents((NSM / name).read_text()))[0].service


def nse(name, ns, **labels):
    return NetworkServiceEndpoint(name=name, network_service_names=[ns],
                                  network_service_labels={ns: ServiceLabels(labels=labels)})


def names(found):
    return [e.name for e in found]


def test_render_expands_label_templates_and_keeps_other_text():
    labels = {"nodeName": "node-1"}
    assert render("{{.nodeName}}", labels) == "node-1"
    assert render("{{ .nodeName }}-x", labels) == "node-1-x"
    assert render("{{.missing}}", labels) == NO_VALUE
    assert render("{{ if .x }}y{{ end }}", labels) == "{{ if .x }}y{{ end }}"
    assert render("plain", labels) == "plain"


def test_subset_compares_like_go_maps():
    assert is_subset({"a": "1", "b": "2"}, {"a": "1"}, {})
    assert not is_subset({"a": "1"}, {"a": "1", "b": "2"}, {})
    assert not is_subset({"a": "1", "c": "3"}, {"a": "1", "b": "2"}, {})
    # a missing label reads as "", as in Go
    assert is_subset({"a": "1"}, {"b": ""}, {})
    assert is_subset({"node": "n1"}, {"node": "{{.host}}"}, {"host": "n1"})


def test_composition_routes_each_hop_to_the_next():
    ns = service("nse-composition-netsvc.yaml")
    nses = [nse(n, ns.name, app=n) for n in
            ("firewall", "passthrough-1", "passthrough-2", "passthrough-3", "gateway")]
    # a client without labels falls to the catch-all: the firewall
    assert names(candidates(ns, nses, {})) == ["firewall"]
    # each passthrough requests onward with its own labels
    assert names(candidates(ns, nses, {"app": "firewall"})) == ["passthrough-1"]
    assert names(candidates(ns, nses, {"app": "passthrough-1"})) == ["passthrough-2"]
    assert names(candidates(ns, nses, {"app": "passthrough-3"})) == ["gateway"]
    # the first applicable match wins even if a later one would also apply
    assert names(candidates(ns, nses, {"app": "firewall", "x": "y"})) == ["passthrough-1"]


def test_scale_from_zero_falls_through_to_the_supplier_until_an_endpoint_exists():
    ns = service("scale-from-zero-netsvc.yaml")
    supplier = nse("supplier", ns.name, app="icmp-responder-supplier")
    spawned = nse("icmp-1", ns.name, app="nse-icmp-responder", nodeName="node-a")
    client = {"nodeName": "node-a"}
    assert names(candidates(ns, [supplier], client)) == ["supplier"]
    assert names(candidates(ns, [supplier, spawned], client)) == ["icmp-1"]
    # the template pins the endpoint to the client's node: another node's client still
    # goes to the supplier
    assert names(candidates(ns, [supplier, spawned], {"nodeName": "node-b"})) == ["supplier"]


def test_changed_matches_select_other_endpoints():
    blue, green = (service(f"change-nse-dynamically-{c}-netsvc.yaml") for c in ("blue", "green"))
    nses = [nse("b", blue.name, color="Blue"), nse("g", blue.name, color="Green")]
    assert names(candidates(blue, nses, {})) == ["b"]
    assert names(candidates(green, nses, {})) == ["g"]


def test_no_matches_means_every_endpoint_and_unmatched_labels_mean_none():
    ns = service("floating-kernel2ip2kernel-netsvc.yaml")
    nses = [nse("a", ns.name), nse("b", ns.name)]
    assert names(candidates(ns, nses, {"any": "thing"})) == ["a", "b"]
    composition = service("nse-composition-netsvc.yaml")
    composition.matches = composition.matches[:-1]  # drop the catch-all
    assert candidates(composition, [nse("x", composition.name, app="gateway")], {}) == []


def test_without_fallthrough_an_empty_match_is_final():
    ns = service("scale-from-zero-netsvc.yaml")
    ns.matches[0].fallthrough = False
    supplier = nse("supplier", ns.name, app="icmp-responder-supplier")
    assert candidates(ns, [supplier], {"nodeName": "n"}) == []


def test_an_endpoint_matching_two_routes_is_listed_twice():
    ns = service("change-nse-dynamically-blue-netsvc.yaml")
    ns.matches[0].routes.append(ns.matches[0].routes[0])
    assert names(candidates(ns, [nse("b", ns.name, color="Blue")], {})) == ["b", "b"]
