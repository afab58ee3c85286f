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
