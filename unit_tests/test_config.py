"""BusConfig: defaults, the environment, and clear errors."""

from __future__ import annotations

import math
import re

import pytest

from relaybus import Bus, BusConfig, ConfigError


def test_defaults_match_docs_configuration() -> None:
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


def test_block_ms_is_accepted_with_a_deprecation_warning_and_ignored() -> None:
    """It did nothing (reads wait for wake-ups, not in Redis): still accepted until 0.3,
    whatever its value, with a warning pointing at the caller's line."""
    with pytest.warns(
        DeprecationWarning, match=r"'block_ms' does nothing .* removed in relaybus 0\.3"
    ) as caught:
        config = Bus.from_url("redis://localhost:6379/0", block_ms=1).config
    assert "block_ms" not in BusConfig.model_fields and not hasattr(config, "block_ms")
    assert config == BusConfig.build()
    assert [w.filename for w in caught] == [__file__]


def test_relaybus_block_ms_in_the_environment_warns_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("relaybus_block_ms", "100")  # matched case-insensitively, like every variable
    with pytest.warns(DeprecationWarning, match=r"variable RELAYBUS_BLOCK_MS does nothing"):
        BusConfig.build()


def test_no_deprecation_warning_without_block_ms(recwarn: pytest.WarningsRecorder) -> None:
    BusConfig.build(claim_idle_ms=1000)
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]


def test_url_password_is_redacted_in_the_config_repr() -> None:
    config = BusConfig.build(url="redis://user:hunter2@localhost:6379/0")
    assert "hunter2" not in repr(config) and "***" in repr(config)


@pytest.mark.parametrize(
    ("url", "kind", "nodes", "service", "db", "tls"),
    [
        (
            "redis+cluster://10.0.0.1:7000,10.0.0.2:7001",
            "cluster",
            (("10.0.0.1", 7000), ("10.0.0.2", 7001)),
            "",
            0,
            False,
        ),
        ("rediss+cluster://h:1/0", "cluster", (("h", 1),), "", 0, True),
        (
            "redis+sentinel://10.0.0.5:26379,10.0.0.6:26379/mymaster",
            "sentinel",
            (("10.0.0.5", 26379), ("10.0.0.6", 26379)),
            "mymaster",
            0,
            False,
        ),
        ("rediss+sentinel://u:p@h:1/m/3", "sentinel", (("h", 1),), "m", 3, True),
        ("redis://localhost:6379/2", "standalone", (), "", 2, False),
    ],
)
def test_cluster_and_sentinel_urls_name_their_nodes(
    url: str, kind: str, nodes: tuple[tuple[str, int], ...], service: str, db: int, tls: bool
) -> None:
    deployment = BusConfig.build(url=url, allow_insecure=True).deployment
    assert (deployment.kind, deployment.nodes, deployment.service, deployment.db, deployment.tls) == (
        kind,
        nodes,
        service,
        db,
        tls,
    )


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+cluster://", "at least one host:port"),
        ("redis+cluster://h:1,h", "host:port, comma-separated"),
        ("redis+cluster://h:1/3", "database 0 only"),
        ("redis+cluster://h:1?ssl_cert_reqs=none", "?options ['ssl_cert_reqs'] are not taken"),
        ("rediss://h:1/0?ssl_cert_reqs=none", "?options ['ssl_cert_reqs'] are not taken"),
        ("rediss://h:1/0?ssl_check_hostname=false", "?options ['ssl_check_hostname'] are not taken"),
        ("redis://10.0.0.9:6379/0?password=pw", "?options ['password'] are not taken"),
        ("redis+sentinel://h:1/m?db=2", "?options ['db'] are not taken"),
        ("redis+sentinel://h:26379", "needs the master's service name"),
        ("redis+sentinel://h:26379/m/x", "database '/m/x' is not a number"),
    ],
)
def test_a_malformed_cluster_or_sentinel_url_is_a_config_error_saying_why(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=rf"url: .*{re.escape(problem)}"):
        BusConfig.build(url=url)


def test_a_cluster_password_over_plain_tcp_to_a_remote_node_is_refused() -> None:
    with pytest.raises(ConfigError, match="password over plain TCP"):
        BusConfig.build(url="redis+cluster://u:pw@127.0.0.1:7000,10.0.0.2:7000")
    assert BusConfig.build(url="redis+cluster://u:pw@127.0.0.1:7000,[::1]:7001").password is not None


@pytest.mark.parametrize("url", ["http://localhost:6379", "localhost:6379", "redis.example.com"])
def test_any_other_url_scheme_is_a_config_error_naming_it(url: str) -> None:
    with pytest.raises(
        ConfigError, match=r"url: .*must start with one of redis://, rediss://, unix://, redis\+cluster://"
    ):
        BusConfig.build(url=url)


def test_the_scheme_error_never_shows_the_url_password() -> None:
    with pytest.raises(ConfigError) as caught:
        BusConfig.build(url="http://agent:s3cret@localhost:6379")
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis://localhost:99999/0", "port '99999' (in 'localhost:99999') is not a number from 1 to 65535"),
        ("redis://u:s3cret@localhost:abc/0", "port 'abc' (in 'localhost:abc') is not a number"),
        ("rediss://[::1]:0/0", "port '0' (in '[::1]:0')"),
        ("redis://localhost:6379/x", "database '/x' is not a number"),
        ("redis://localhost:6379/1/2", "database '/1/2' is not a number"),
        ("redis://localhost:6379?db=y", "database '?db=y' is not a number"),
        ("redis://localhost:6379/5?db=0", "gives its database twice"),
        ("unix:///tmp/redis.sock?db=x", "database '?db=x' is not a number"),
        ("redis+cluster://h:1,h:65536", "each port 1-65535 (got 'h:65536')"),
    ],
)
def test_a_junk_port_or_database_is_a_config_error_naming_that_part(url: str, problem: str) -> None:
    """redis-py would find a junk port only when connecting, and read /x as database 0."""
    with pytest.raises(ConfigError, match=rf"url: .*{re.escape(problem)}") as caught:
        BusConfig.build(url=url)
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "db"),
    [
        ("redis://localhost:6379", 0),
        ("redis://localhost:6379/", 0),
        ("redis://[::1]:6379/7", 7),
        ("rediss://h/3", 3),
        ("unix:///tmp/redis.sock?db=2", 2),
        ("unix:///tmp/redis.sock", 0),
    ],
)
def test_a_standalone_url_names_its_database(url: str, db: int) -> None:
    assert BusConfig.build(url=url).deployment.db == db


@pytest.mark.parametrize(
    "url",
    [
        "redis://u:pa#ss-zq7@10.0.0.1:6379/0",
        "redis://:se/cret-zq7@10.0.0.1:6379",
        "rediss://:se?cret-zq7@10.0.0.1:6379",
        "redis+cluster://u:p/w-zq7@127.0.0.1:7000",
        "redis+sentinel://:p#w-zq7@127.0.0.1:26379/mymaster",
    ],
)
def test_a_raw_reserved_character_in_a_url_password_is_refused_without_showing_it(url: str) -> None:
    """A password holding / ? or # ends the URL's userinfo early: the rest would be read
    as a host, path, option or fragment - connecting somewhere else, or quoting it."""
    with pytest.raises(ConfigError, match="must percent-encode it") as caught:
        BusConfig.build(url=url)
    assert "zq7" not in str(caught.value)


def test_a_percent_encoded_reserved_character_in_a_password_is_taken() -> None:
    config = BusConfig.build(url="redis://u:pa%23s%2Fs%3F%40@127.0.0.1:6379/0")
    assert config.deployment.kind == "standalone"


def test_a_standalone_url_keeps_its_db_option() -> None:
    assert BusConfig.build(url="unix:///tmp/redis.sock?db=3").url.endswith("?db=3")


def test_model_dump_never_prints_the_url_password() -> None:
    config = BusConfig.build(url="redis://agent:hunter2@localhost:6379/0")
    assert "hunter2" not in str(config.model_dump()) and "hunter2" not in config.model_dump_json()
    assert config.model_dump()["url"] == "redis://agent:***@localhost:6379/0"


@pytest.mark.parametrize(
    "field", ["socket_timeout", "retry_backoff_s", "publish_timeout_s", "dedup_window_s"]
)
@pytest.mark.parametrize("value", [math.inf, math.nan])
def test_a_duration_setting_must_be_finite(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=rf"{field}: Input should be a finite number"):
        BusConfig.build(**{field: value})


@pytest.mark.parametrize(
    ("field", "floor"),
    [
        ("cleanup_interval_s", 0.1),
        ("health_check_interval_s", 0.1),
        ("socket_timeout", 0.01),
        ("connect_timeout", 0.01),
    ],
)
def test_an_interval_or_timeout_below_its_floor_is_a_config_error(field: str, floor: float) -> None:
    """At 1e-9 s an idle bus sent thousands of commands a second; the floor is named."""
    with pytest.raises(ConfigError, match=rf"{field}: Input should be greater than or equal to {floor}"):
        BusConfig.build(**{field: 1e-9})
    assert getattr(BusConfig.build(**{field: floor}), field) == floor


def test_a_misspelt_disabled_plugin_is_a_config_error_naming_the_closest_plugin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A misspelling would disable nothing, silently: checked against the entry points."""
    with pytest.raises(
        ConfigError,
        match=r"disabled_plugins names no installed plugin: "
        r"'metircs' \(did you mean 'metrics'\?\)",
    ):
        BusConfig.build(disabled_plugins=["dlq", "metircs"])
    monkeypatch.setenv("RELAYBUS_DISABLED_PLUGINS", "dlq,no_such_plugin")
    with pytest.raises(ConfigError, match=r"'no_such_plugin' \(installed: .*dlq"):
        BusConfig.build()
    monkeypatch.delenv("RELAYBUS_DISABLED_PLUGINS")
    assert BusConfig.build(disabled_plugins=["dlq", "metrics"]).disabled_plugins == ["dlq", "metrics"]


def test_sentinel_credentials_are_for_sentinel_urls_and_never_shown() -> None:
    config = BusConfig.build(
        url="redis+sentinel://127.0.0.1:26379/m", sentinel_password="zq7-secret", sentinel_username="watcher"
    )
    secret = config.sentinel_password
    assert secret is not None and secret.get_secret_value() == "zq7-secret"
    assert "zq7" not in repr(config) + config.model_dump_json()
    with pytest.raises(ConfigError, match=r"sentinel_password need a redis\+sentinel:// URL"):
        BusConfig.build(url="redis://127.0.0.1:6379/0", sentinel_password="zq7-secret")
    with pytest.raises(ConfigError, match="password over plain TCP to a remote host is refused") as caught:
        BusConfig.build(url="redis+sentinel://10.0.0.5:26379/m", sentinel_password="zq7-secret")
    assert "zq7" not in str(caught.value)
    assert BusConfig.build(url="rediss+sentinel://10.0.0.5:26379/m", sentinel_password="zq7-secret")
