import pytest

from nsmd.config import Config, load
from nsmd.errors import ValidationError


def test_sources_override_in_order(tmp_path):
    toml = tmp_path / "nsmd.toml"
    toml.write_text('name = "from-file"\nstate-dir = "/srv/file"\ntunnel_port = 4000\n')
    env = {"NSMD_STATE_DIR": "/srv/env", "NSMD_TUNNEL_PORT": "5000"}
    cfg = load({"tunnel_port": 6000, "name": None}, str(toml), env)
    assert (cfg.name, cfg.state_dir, cfg.tunnel_port) == ("from-file", "/srv/env", 6000)
    assert load({}, None, {}) == Config().validate()


def test_config_file_from_the_environment(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('api_socket = "/run/x.sock"\n')
    assert load({}, None, {"NSMD_CONFIG": str(toml)}).api_socket == "/run/x.sock"


@pytest.mark.parametrize("content, env, message", [
    ("colour = 1\n", {}, "unknown option 'colour'"),
    ("tunnel_port = 'x'\n", {}, "tunnel_port: expected a number"),
    ("name = [\n", {}, "not valid TOML"),
    ("", {"NSMD_LOCAL_MTU": "9"}, "local-mtu: expected an MTU"),
    ("", {"NSMD_LOG_LEVEL": "loud"}, "log-level"),
    ("", {"NSMD_REGISTRY": "http://x:1"}, "registry: expected https://"),
    ("", {"NSMD_LISTEN": "0.0.0.0:7000", "NSMD_IDENTITY_DIR": "/x"}, "listen: expected IPV4"),
    ("", {"NSMD_LISTEN": "192.0.2.1:7000"}, "identity-dir"),
    ("local_mtu = inf\n", {}, "local_mtu: expected a number (int), got inf"),
    ("local_mtu = 1500.5\n", {}, "local_mtu: expected a number (int), got 1500.5"),
    ("", {"NSMD_HEAL_DETECT_S": "0.1"}, "heal-detect-s: expected 0.4 to 600 seconds"),
    ("", {"NSMD_KEEPALIVE_S": "2"}, "keepalive-s: expected at most 3/8 of heal-detect-s"),
    ("tunnel_aead = 'aes-128-gcm'\n", {}, "tunnel-aead: expected auto, or some of"),
])
def test_bad_values_name_their_option(tmp_path, content, env, message):
    toml = tmp_path / "c.toml"
    toml.write_text(content)
    with pytest.raises(ValidationError) as err:
        load({}, str(toml), env)
    assert message in str(err.value)


def test_missing_config_file():
    with pytest.raises(ValidationError, match="an existing TOML file"):
        load({}, "/no/such.toml", {})


def test_rekeys_must_come_before_the_engine_refuses_keys():
    from nsmd.config import REKEY_LIMIT_S
    from nsmd.fastpath.engine import REJECT_AFTER_S

    assert REKEY_LIMIT_S < REJECT_AFTER_S
    with pytest.raises(ValidationError, match="rekey-after-s"):
        Config(rekey_after_s=REKEY_LIMIT_S + 1).validate()


def test_registry_id_and_api_group_are_checked():
    with pytest.raises(ValidationError, match="registry-id: expected used together"):
        Config(registry_id="spiffe://td/node/a").validate()
    with pytest.raises(ValidationError, match="registry-id"):
        Config(registry="https://192.0.2.1:7000", registry_id="node-a",
               identity_dir="/x").validate()
    with pytest.raises(ValidationError, match="api-group"):
        Config(api_group="no-such-group-here").validate()
    assert Config(api_group="0").validate().api_group == "0"


def test_registry_tls_and_federation_options(tmp_path):
    pem = tmp_path / "ca.pem"
    pem.write_text("x")
    etcd = {"registry": "etcd://127.0.0.1:2379", "registry_ca": str(pem)}
    with pytest.raises(ValidationError, match="registry-ca"):
        Config(**etcd).validate()  # no certificate and no identity to present
    Config(**etcd, identity_dir=str(tmp_path)).validate()  # our SVID then
    Config(**etcd, registry_cert=str(pem), registry_key=str(pem)).validate()
    with pytest.raises(ValidationError, match="registry-ca"):
        Config(registry_ca=str(pem), registry_cert=str(pem), registry_key=str(pem)).validate()
    with pytest.raises(ValidationError, match="registry"):
        Config(registry="etcd://nohost").validate()
    with pytest.raises(ValidationError, match="federate"):
        Config(federate=f"b.test={tmp_path}/missing.pem").validate()
    Config(federate=f"b.test={pem}").validate()
    assert load({}, environ={"NSMD_REGISTRY_ONLY": "yes"}).registry_only is True
    with pytest.raises(ValidationError, match="NSMD_REGISTRY_ONLY"):
        load({}, environ={"NSMD_REGISTRY_ONLY": "maybe"})


def test_the_config_template_names_every_option_with_its_default(tmp_path):
    import dataclasses
    import re

    from nsmd.cli.config_template import render

    text = render()
    assert all(line.startswith("#") or not line for line in text.splitlines())
    options = [m for line in text.splitlines()
               if (m := re.fullmatch(r"# ([a-z][a-z0-9-]*) = (.*)", line))]
    assert sorted(m[1] for m in options) == sorted(
        f.name.replace("_", "-") for f in dataclasses.fields(Config))
    uncommented = tmp_path / "all.toml"   # every option line, taken at its word
    uncommented.write_text("\n".join(m[0][2:] for m in options if m[1] != "name"))
    loaded = load({}, str(uncommented), environ={})
    assert dataclasses.replace(loaded, name="x") == dataclasses.replace(Config(), name="x")


def test_advertise_names_where_others_reach_this_daemon(tmp_path):
    listening = {"listen": "198.51.100.2:7000", "identity_dir": str(tmp_path)}
    assert Config(**listening).url == "https://198.51.100.2:7000"
    assert Config(**listening, advertise="192.0.2.101").url == "https://192.0.2.101:7000"
    forwarded = Config(**listening, advertise="192.0.2.101:443")
    assert forwarded.url == "https://192.0.2.101:443" and forwarded.advertised_ip == "192.0.2.101"
    assert Config(**listening).advertised_ip == ""
    with pytest.raises(ValidationError, match="advertise: needs --listen"):
        Config(advertise="192.0.2.101").validate()
    with pytest.raises(ValidationError, match="advertise: expected IPV4:PORT"):
        Config(**listening, advertise="not-an-ip").validate()
