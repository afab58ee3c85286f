import pathlib

import pytest

from nsmd.errors import ValidationError
from nsmd.manifest import load_yaml_documents, parse_documents, to_manifest

NSM = pathlib.Path(__file__).parent.parent / "data" / "nsm"
EXAMPLES = pathlib.Path(__file__).parents[2] / "examples"


@pytest.mark.parametrize("name", ["nse-composition-netsvc.yaml", "scale-from-zero-netsvc.yaml",
                                  "change-nse-dynamically-blue-netsvc.yaml",
                                  "floating-kernel2ip2kernel-netsvc.yaml"])
def test_nsm_manifests_load_unchanged(name):
    resources = parse_documents(load_yaml_documents((NSM / name).read_text(), name))
    assert len(resources) == 1 and resources[0].kind == "NetworkService"
    ns = resources[0].service
    assert ns.name == resources[0].name
    assert ns.payload in ("IP", "ETHERNET")


def test_composition_manifest_keeps_match_order_and_catch_all():
    text = (NSM / "nse-composition-netsvc.yaml").read_text()
    ns = parse_documents(load_yaml_documents(text))[0].service
    assert [m.source_selector for m in ns.matches] == [
        {"app": "firewall"}, {"app": "passthrough-1"}, {"app": "passthrough-2"},
        {"app": "passthrough-3"}, {}]
    assert ns.matches[-1].routes[0].destination_selector == {"app": "firewall"}


def test_example_endpoint_manifest_carries_the_nsmd_block():
    resources = parse_documents(load_yaml_documents(
        (EXAMPLES / "icmp-responder.yaml").read_text()))
    nse = resources[1]
    assert nse.endpoint.network_service_names == ["icmp-responder"]
    assert nse.spec.netns == "nse-1" and nse.spec.ipam.prefix == "169.254.0.0/16"
    back = to_manifest(nse.endpoint, nse.spec)
    assert back["spec"]["nsmd"]["ifname"] == "nsm0"
    assert parse_documents([back])[0].spec == nse.spec


NSE = """
apiVersion: networkservicemesh.io/v1
kind: NetworkServiceEndpoint
metadata: {name: e1}
spec:
  network_service_names: [svc]
  nsmd: %s
"""


@pytest.mark.parametrize("block, message", [
    ("{ipam: {prefix: 169.254.0.1/16}}", "spec.nsmd.ipam.prefix: expected a network prefix"),
    ("{ifname: this-name-is-too-long}", "spec.nsmd.ifname: expected an interface name"),
    ("{netns: 'a/b'}", "spec.nsmd.netns: expected a network namespace name"),
    ("{mtu: 70000}", "spec.nsmd.mtu: expected an MTU"),
    ("{colour: red}", "spec.nsmd.colour: unknown field"),
    ("{functions: [{name: frobnicate}]}",
     "spec.nsmd.functions[0].name: expected a network service function (capture, firewall"),
    ("{functions: [{name: firewall, config: {rules: [{proto: tcp, ports: '80-x'}]}}]}",
     "spec.nsmd.functions[0].config.rules[0].ports: expected ports like"),
    ("{functions: [{name: firewall, config: {rules: [{proto: icmp, ports: '80'}]}}]}",
     "spec.nsmd.functions[0].config.rules[0].ports: expected ports only with"),
    ("{functions: [{name: firewall, config: {default: maybe}}]}",
     "spec.nsmd.functions[0].config.default: expected one of allow, deny"),
    ("{functions: [{name: firewall, config: {nsm_acl_file: /nonexistent.yaml}}]}",
     "spec.nsmd.functions[0].config.nsm_acl_file: /nonexistent.yaml: No such file"),
])
def test_bad_endpoint_blocks_are_refused_with_the_field(block, message):
    with pytest.raises(ValidationError) as err:
        parse_documents(load_yaml_documents(NSE % block))
    assert message in str(err.value)
    assert "NetworkServiceEndpoint 'e1'" in str(err.value)


@pytest.mark.parametrize("text, message", [
    ("kind: NetworkService\nmetadata: {name: x}", "apiVersion: expected networkservicemesh.io/v1"),
    ("apiVersion: networkservicemesh.io/v1\nkind: Pod\nmetadata: {name: x}", "kind: expected"),
    ("apiVersion: networkservicemesh.io/v1\nkind: NetworkService\nmetadata: {}",
     "metadata.name: expected a non-empty string"),
    ("apiVersion: networkservicemesh.io/v1\nkind: NetworkService\nmetadata: {name: 'a b'}",
     "metadata.name: expected letters"),
    ("a: [1, 2", "not valid YAML"),
    ("", "no manifest documents"),
])
def test_bad_documents_are_refused(text, message):
    with pytest.raises(ValidationError) as err:
        parse_documents(load_yaml_documents(text, "f.yaml"))
    assert message in str(err.value)


def test_a_name_twice_in_one_apply_is_refused():
    doc = {"apiVersion": "networkservicemesh.io/v1", "kind": "NetworkService",
           "metadata": {"name": "x"}, "spec": {}}
    with pytest.raises(ValidationError, match="appears twice"):
        parse_documents([doc, doc])
