"""BusConfig: defaults, the environment, and clear errors."""

from __future__ import annotations

import pytest

from relaybus import Bus, BusConfig, ConfigError


def test_defaults_match_the_design() -> None:
    config = BusConfig.build()
    assert config.prefix == "relaybus" and config.overflow == "reject"
    assert config.max_message_bytes == 1 << 20 and config.outbox_path is None


def test_unknown_field_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="no_such_field"):
        Bus.from_url("redis://localhost", no_such_field=1)


def test_bad_value_names_the_field() -> None:
    with pytest.raises(ConfigError, match="claim_idle_ms"):
        BusConfig.build(claim_idle_ms=-1)
    with pytest.raises(ConfigError, match="prefix"):
        BusConfig.build(prefix="has space")


def test_environment_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAYBUS_URL", "redis://example:6380/2")
    monkeypatch.setenv("RELAYBUS_DISABLED_PLUGINS", "dlq, metrics")
    config = BusConfig.build()
    assert config.url == "redis://example:6380/2"
    assert config.disabled_plugins == ["dlq", "metrics"]


def test_password_never_in_repr() -> None:
    config = BusConfig.build(url="redis://user:hunter2@localhost:6379/0", password="s3cret")
    bus = Bus(config)
    assert "s3cret" not in repr(config) and "hunter2" not in repr(bus)


def test_block_ms_is_accepted_though_nothing_blocks_in_redis_any_more() -> None:
    """Reads wait for wake-ups, not in a command, so socket_timeout no longer bounds it."""
    assert BusConfig.build(block_ms=5000, socket_timeout=5).block_ms == 5000


def test_url_password_is_redacted_in_the_config_repr() -> None:
    config = BusConfig.build(url="redis://user:hunter2@localhost:6379/0")
    assert "hunter2" not in repr(config) and "***" in repr(config)


@pytest.mark.parametrize("url", ["redis+cluster://10.0.0.1:7000,10.0.0.2:7000", "rediss+cluster://h:1",
                                 "redis+sentinel://10.0.0.5:26379/mymaster", "rediss+sentinel://h:1/m"])
def test_cluster_and_sentinel_urls_are_refused_when_the_config_is_built(url: str) -> None:
    with pytest.raises(ConfigError, match=r"url: .*is not supported yet"):
        BusConfig.build(url=url)


@pytest.mark.parametrize("url", ["http://localhost:6379", "localhost:6379", "redis.example.com"])
def test_any_other_url_scheme_is_a_config_error_naming_it(url: str) -> None:
    with pytest.raises(ConfigError, match=r"url: .*must start with redis://, rediss:// or unix://"):
        BusConfig.build(url=url)


def test_the_scheme_error_never_shows_the_url_password() -> None:
    with pytest.raises(ConfigError) as caught:
        BusConfig.build(url="http://agent:s3cret@localhost:6379")
    assert "s3cret" not in str(caught.value)
