"""TLS/ACL settings: checked when the config is built, handed to redis-py by the plugin."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from relaybus import BusConfig, ConfigError, PluginError
from relaybus.connection import make_client
from relaybus_plugins import tls_auth


@pytest.fixture
def pem(tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    path.write_text("not parsed when the config is built")
    return str(path)


def test_credentials_come_from_the_url() -> None:
    config = BusConfig.build(url="redis://agent:p%40ss@localhost:6379/0")
    assert config.username == "agent"
    assert config.password is not None and config.password.get_secret_value() == "p@ss"


def test_url_credentials_win_over_the_fields() -> None:
    config = BusConfig.build(url="redis://agent:fromurl@localhost/0", username="other", password="field")
    assert config.username == "agent"
    assert config.password is not None and config.password.get_secret_value() == "fromurl"


@pytest.mark.parametrize(
    "fields",
    [
        {"url": "redis://agent:hunter2@redis.example.com:6379/0"},
        {"url": "redis://10.1.2.3:6379/0", "password": "hunter2"},
        {"url": "redis+sentinel://127.0.0.1:26379,redis.example.com:26379/mymaster", "password": "hunter2"},
    ],
)
def test_password_over_plain_tcp_to_a_remote_host_is_refused(fields: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="allow_insecure") as info:
        BusConfig.build(**fields)
    assert "hunter2" not in str(info.value)
    assert BusConfig.build(**fields, allow_insecure=True).password is not None


@pytest.mark.parametrize(
    "url",
    [
        "redis://:hunter2@localhost:6379/0",
        "redis://:hunter2@127.0.0.5:6379/0",
        "redis://:hunter2@[::1]:6379/0",
        "unix://:hunter2@/tmp/redis.sock",
        "rediss://:hunter2@redis.example.com:6380/0",
    ],
)
def test_password_is_allowed_over_tls_or_loopback(url: str) -> None:
    assert BusConfig.build(url=url).password is not None


def test_a_secret_is_not_in_a_raw_validation_error() -> None:
    with pytest.raises(ValidationError) as info:
        BusConfig(url="redis://agent:hunter2@redis.example.com/0")
    assert "hunter2" not in str(info.value)


def test_missing_certificate_file_names_the_field(tmp_path: Path, pem: str) -> None:
    with pytest.raises(ConfigError, match=r"ssl_certfile: .*not a readable file"):
        BusConfig.build(url="rediss://redis.example.com", ssl_certfile=str(tmp_path / "nope.pem"))
    with pytest.raises(ConfigError, match="ssl_ca_certs"):
        BusConfig.build(url="rediss://redis.example.com", ssl_ca_certs=str(tmp_path))  # a directory
    assert BusConfig.build(url="rediss://redis.example.com", ssl_ca_certs=pem).ssl_ca_certs == pem


def test_ssl_files_with_a_plain_url_are_refused(pem: str) -> None:
    with pytest.raises(ConfigError, match="ssl_ca_certs is set but the url is not rediss"):
        BusConfig.build(url="redis://localhost", ssl_ca_certs=pem)


def test_a_key_needs_a_certificate(pem: str) -> None:
    with pytest.raises(ConfigError, match="ssl_keyfile needs ssl_certfile"):
        BusConfig.build(url="rediss://localhost", ssl_keyfile=pem)


def test_plugin_hands_tls_and_credentials_to_redis_py(pem: str) -> None:
    config = BusConfig.build(
        url="rediss://redis.example.com:6380/0",
        ssl_ca_certs=pem,
        ssl_certfile=pem,
        ssl_keyfile=pem,
        ssl_check_hostname=False,
        username="agent",
        password="s3cret",
    )
    options = tls_auth.redis_connection_options(config)
    assert options == {
        "username": "agent",
        "password": "s3cret",
        "ssl_ca_certs": pem,
        "ssl_certfile": pem,
        "ssl_keyfile": pem,
        "ssl_check_hostname": False,
    }
    client = make_client(config, [options])
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["ssl_ca_certs"], kwargs["password"]) == (pem, "s3cret")
    assert kwargs["ssl_check_hostname"] is False


def test_plugin_adds_no_tls_options_to_a_plain_url() -> None:
    config = BusConfig.build(url="redis://localhost:6379/0", password="s3cret")
    assert tls_auth.redis_connection_options(config) == {"password": "s3cret"}


def test_plugins_may_not_override_the_core_or_each_other() -> None:
    config = BusConfig.build(url="redis://localhost:6379/0")
    with pytest.raises(PluginError, match="'decode_responses' is set by the core"):
        make_client(config, [{"decode_responses": True}])
    with pytest.raises(PluginError, match="plugins disagree on 'client_name'"):
        make_client(config, [{"client_name": "a"}, None, {"client_name": "b"}])
    client = make_client(config, [{"client_name": "a"}, None, {"client_name": "a"}])
    assert client.connection_pool.connection_kwargs["client_name"] == "a"
