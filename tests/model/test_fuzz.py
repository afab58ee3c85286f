"""Fuzzed manifests and configuration: every bad input is refused with one clear line
(a ValidationError naming the field), nothing else escapes."""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nsmd import config
from nsmd.errors import ValidationError
from nsmd.manifest import load_yaml_documents, parse_documents
from tests.fuzzing import mutated, scalars

NSM = pathlib.Path(__file__).parent.parent / "data" / "nsm"
FUZZ = settings(max_examples=300, deadline=None, derandomize=True,  # the same cases in CI
                suppress_health_check=[HealthCheck.too_slow])

SERVICE = load_yaml_documents((NSM / "nse-composition-netsvc.yaml").read_text())[0]
ENDPOINT = {
    "apiVersion": "networkservicemesh.io/v1", "kind": "NetworkServiceEndpoint",
    "metadata": {"name": "e1"},
    "spec": {"network_service_names": ["svc"],
             "network_service_labels": {"svc": {"labels": {"app": "a"}}},
             "nsmd": {"netns": "nse-1", "ifname": "nsm0", "mtu": 1400,
                      "ipam": {"prefix": "169.254.0.0/16", "exclude_prefixes": []},
                      "functions": [{"name": "firewall", "config": {
                          "default": "deny", "rules": [{"action": "allow", "proto": "tcp",
                                                         "ports": "80,8000-8100"}]}},
                                    {"name": "ratelimit", "config": {"rate_bps": 1000000}}],
                      "supplier": {"labels": {"app": "x"},
                                   "ipam": {"prefix": "172.16.3.0/24"}, "idle_s": 60}}}}


def refused_in_one_line(err: ValidationError) -> None:
    text = str(err)
    assert text and "\n" not in text and "Traceback" not in text


@FUZZ
@given(st.lists(mutated(SERVICE) | mutated(ENDPOINT), min_size=1, max_size=3))
def test_mutated_manifests(docs):
    try:
        parse_documents(docs)
    except ValidationError as err:
        refused_in_one_line(err)


@FUZZ
@given(st.text(max_size=300))
def test_any_yaml_text(text):
    try:
        parse_documents(load_yaml_documents(text, "fuzz.yaml"))
    except ValidationError as err:
        refused_in_one_line(err)


OPTIONS = [f.name.replace("_", "-") for f in dataclasses.fields(config.Config)]


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if value is None:
        return '""'
    return "[" + ", ".join(toml_value(v) for v in value) + "]"


@FUZZ
@given(st.dictionaries(st.sampled_from(OPTIONS) | st.text(
    alphabet="abcdefghijklmnopqrstuvwxyz-_", min_size=1, max_size=12),
    scalars | st.lists(st.integers(-5, 5), max_size=3), max_size=5), st.text(max_size=40))
def test_toml_config_files(tmp_path_factory, options, garbage):
    path = tmp_path_factory.mktemp("cfg") / "nsmd.toml"
    text = "".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in options.items())
    for body in (text, text + garbage):
        path.write_text(body)
        try:
            loaded = config.load({}, str(path), environ={})
        except ValidationError as err:
            refused_in_one_line(err)
        else:
            assert loaded.validate() is loaded


@FUZZ
@given(st.dictionaries(st.sampled_from([f"NSMD_{o.replace('-', '_').upper()}"
                                        for o in OPTIONS]), st.text(max_size=20), max_size=4))
def test_environment_variables(environ):
    try:
        config.load({}, None, environ=environ)
    except ValidationError as err:
        refused_in_one_line(err)
