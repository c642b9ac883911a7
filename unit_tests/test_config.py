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
