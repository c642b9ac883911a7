"""BusConfig: every knob of a Bus, from keywords or RELAYBUS_* environment variables."""

from __future__ import annotations

import ipaddress
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar, cast
from urllib.parse import unquote, urlsplit

from pydantic import (
    BaseModel,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from . import settings
from .deployment import Deployment, parse
from .errors import ConfigError
from .keys import PREFIX_RE
from .redact import redact_url

M = TypeVar("M", bound=BaseModel)
# Floors of the settings that pace periodic work or bound a round trip: at 1e-9 s an idle bus
# sent thousands of commands a second (each cleanup and health check is a round trip or more).
MIN_INTERVAL_S = 0.1
MIN_TIMEOUT_S = 0.01
# Fields that no longer do anything -> why. Still accepted, as a keyword or a RELAYBUS_
# variable, with a DeprecationWarning, so existing configurations keep working until then.
DEPRECATED = {
    "block_ms": "the consume engine waits for wake-ups instead of blocking in Redis "
    "(docs/consuming.md); read(..., block_ms=...) is another thing and stays",
}
DEPRECATED_UNTIL = "0.3"
# Packages between a user's call and the check: a warning points past them, at that call.
INTERNAL = frozenset({"relaybus", "pydantic", "pydantic_settings", "pydantic_core"})


class BusConfig(BaseSettings):
    """Configuration of one Bus. Durations are seconds unless the name ends in `_ms`."""

    model_config = SettingsConfigDict(
        env_prefix="RELAYBUS_",
        extra="forbid",
        validate_default=True,
        frozen=True,
        hide_input_in_errors=True,  # an input may hold a password
        allow_inf_nan=False,  # socket_timeout=inf would fail deep in asyncio; nan compares false
    )
    _plugin_settings: dict[type[BaseModel], BaseModel] = PrivateAttr(default_factory=dict)

    url: str = Field(
        "redis://localhost:6379/0",
        description="Redis URL: redis://, rediss://, unix://; redis+cluster://host:port[,host:port...] "
        "(Cluster seed nodes); redis+sentinel://host:port[,host:port...]/service[/db] "
        "(the sentinels and the master's name); rediss+ for TLS.",
    )
    prefix: str = Field("relaybus", description="Key prefix; the bus touches nothing outside it.")
    consumer_name: str | None = Field(
        None, description="Consumer name in groups; default host-pid-random, unique per Bus."
    )
    claim_idle_ms: int = Field(
        30_000, ge=100, description="A message pending this long in a consumer is reclaimed."
    )
    max_message_bytes: int = Field(1 << 20, ge=64, description="Largest encoded message accepted.")
    max_queue_size: int | None = Field(
        None, ge=1, description="Unconsumed entries per topic; None: no limit."
    )
    overflow: Literal["reject", "drop_oldest"] = Field(
        "reject", description="What publish does at max_queue_size."
    )
    dedup_window_s: float = Field(3600.0, gt=0, description="How long a dedup key is remembered.")
    default_ttl: float | None = Field(None, gt=0, description="TTL for messages published without one.")
    outbox_path: Path | None = Field(None, description="SQLite outbox used while Redis is unreachable.")
    outbox_max_entries: int = Field(
        100_000, ge=1, description="Messages the outbox holds at most; publish then raises OutboxFullError."
    )
    outbox_max_bytes: int = Field(
        256 << 20, ge=1024, description="Encoded bytes the outbox holds at most; then OutboxFullError."
    )
    allow_insecure: bool = Field(False, description="Allow a password over plain TCP to a remote host.")
    disabled_plugins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Plugin names not to load (env: comma-separated)."
    )
    dead_letter_expired: bool = Field(
        False, description="Dead-letter expired messages (reason 'expired'), not only count them."
    )
    cleanup_interval_s: float = Field(
        60.0, ge=MIN_INTERVAL_S, description="How often an open bus runs its on_cleanup hooks."
    )
    periodic_cleanup: bool = Field(
        True,
        description="Run the on_cleanup hooks every cleanup_interval_s while open; False for a tool "
        "(dashboard, metrics, tail): `bus.cleanup()` still runs them when called.",
    )
    memory_pressure_ratio: float = Field(
        0.8,
        gt=0,
        le=1,
        description="used_memory / maxmemory at which cleanup drops all consumed history.",
    )
    publish_timeout_s: float = Field(
        5.0,
        ge=0,
        description="How long publish retries (idempotently) while Redis is unreachable before it "
        "raises BusUnavailableError or uses the outbox; 0: one attempt.",
    )
    min_replicas_acked: int = Field(
        0,
        ge=0,
        description="A publish returns only once WAIT confirms this many replicas hold it; 0: no WAIT.",
    )
    replica_ack_timeout_ms: int = Field(
        1000,
        ge=1,
        description="How long a publish waits for min_replicas_acked replicas before ReplicationError.",
    )
    health_check_interval_s: float = Field(
        5.0, ge=MIN_INTERVAL_S, description="How often an open bus PINGs Redis to track its connection state."
    )
    socket_timeout: float = Field(
        5.0, ge=MIN_TIMEOUT_S, description="Seconds a command may take before it fails."
    )
    connect_timeout: float = Field(5.0, ge=MIN_TIMEOUT_S, description="Seconds to establish a connection.")
    max_connections: int = Field(64, ge=2, description="Connection pool size.")
    username: str | None = Field(None, description="ACL user (also taken from the URL).")
    password: SecretStr | None = Field(None, description="ACL password (also taken from the URL).")
    sentinel_username: str | None = Field(
        None, description="ACL user on the sentinels themselves (redis+sentinel:// only)."
    )
    sentinel_password: SecretStr | None = Field(
        None,
        description="Password of the sentinels themselves (their requirepass; redis+sentinel:// only); "
        "the URL's credentials are the master's.",
    )

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        parse(value)
        return value

    @property
    def deployment(self) -> Deployment:
        """One server, a Cluster or a Sentinel-watched master, as the URL says."""
        return parse(self.url)

    @field_serializer("url")
    def _url_without_password(self, value: str) -> str:
        """model_dump()/model_dump_json() never print the URL's password."""
        return redact_url(value)

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not PREFIX_RE.fullmatch(value):
            raise ValueError("use 1-64 letters, digits or '. _ - :'")
        return value

    @model_validator(mode="before")
    @classmethod
    def _credentials_from_url(cls, data: Any) -> Any:
        """A user and password in the URL fill `username`/`password` (and win over them,
        as in redis-py), so every check and plugin sees one set of credentials."""
        if not isinstance(data, dict) or not isinstance(data.get("url"), str):
            return data
        try:
            parts = urlsplit(data["url"])
        except ValueError:  # the url field's own check says so, without quoting the URL
            return data
        if parts.username:
            data = {**data, "username": unquote(parts.username)}
        if parts.password is not None:
            data = {**data, "password": unquote(parts.password)}
        return data

    @model_validator(mode="after")
    def _sentinel_credentials_for_sentinels(self) -> BusConfig:
        given = (self.sentinel_username, self.sentinel_password) != (None, None)
        if given and self.deployment.kind != "sentinel":
            raise ValueError("sentinel_username and sentinel_password need a redis+sentinel:// URL")
        return self

    @model_validator(mode="after")
    def _password_not_in_clear(self) -> BusConfig:
        secret = self.password is not None or self.sentinel_password is not None
        if secret and not (self.deployment.tls or self.allow_insecure or _local(self.url)):
            raise ValueError(
                "a password over plain TCP to a remote host is refused: use rediss://, "
                "or set allow_insecure=True"
            )
        return self

    @model_validator(mode="wrap")
    @classmethod
    def _with_plugin_settings(cls, data: Any, handler: ModelWrapValidatorHandler[BusConfig]) -> BusConfig:
        """The core's fields first; then every other name must be a setting an enabled
        plugin declares (plugin_settings), validated by that plugin's model."""
        if not isinstance(data, dict):
            return handler(data)
        data = _without_deprecated(data)
        config = handler({k: v for k, v in data.items() if k in cls.model_fields})
        declared = settings.installed(frozenset(config.disabled_plugins), frozenset(cls.model_fields))
        given = {k: v for k, v in data.items() if k not in cls.model_fields}
        config._plugin_settings = settings.validate(config, given, declared)
        return config

    def settings(self, model: type[M]) -> M:
        """A plugin's settings, typed: `bus.config.settings(MySettings).my_field`.

        For a plugin registered by hand after this config was built, they come from the
        RELAYBUS_ variables and the model's defaults.

        Args:
            model: The pydantic model the plugin's `plugin_settings` hook returns.

        Returns:
            That model's instance for this configuration (made once, then kept).
        """
        owned = (self.__pydantic_private__ or {})["_plugin_settings"]  # not via __getattr__: per message
        found = owned.get(model)
        if found is None:
            found = owned[model] = settings.of(model, self, {}, model.__name__)
        return cast(M, found)

    if not TYPE_CHECKING:  # plugin settings read as bus.config.<name>; typed: settings()

        def __getattr__(self, name: str) -> Any:
            try:
                return super().__getattr__(name)
            except AttributeError:
                for owned in (self.__pydantic_private__ or {}).get("_plugin_settings", {}).values():
                    if name in type(owned).model_fields:
                        return getattr(owned, name)
                raise

    @field_validator("disabled_plugins", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, redact_url(value) if name == "url" else value

    @classmethod
    def build(cls, **fields: Any) -> BusConfig:
        """Like the constructor, but every problem is one ConfigError naming the field.

        Args:
            **fields: Fields and plugin settings by name, over the `RELAYBUS_*` variables.

        Returns:
            The configuration, frozen.

        Raises:
            ConfigError: Each unknown or invalid field named, with the closest known name.
        """
        try:
            return cls(**fields)
        except ValidationError as exc:
            problems = "; ".join(_problem(err) for err in exc.errors(include_input=False))
            raise ConfigError(f"invalid relaybus configuration: {problems}") from None


def _without_deprecated(data: dict[str, Any]) -> dict[str, Any]:
    """`data` without the DEPRECATED fields, warning for each given (keyword or variable)."""
    env_prefix = BusConfig.model_config.get("env_prefix", "")
    for name, why in DEPRECATED.items():
        variable = f"{env_prefix}{name}".upper()
        given = [f"the setting {name!r}"] if name in data else []
        given += [f"the variable {variable}"] if any(k.upper() == variable for k in os.environ) else []
        for what in given:
            warnings.warn(
                f"{what} does nothing and will be removed in relaybus {DEPRECATED_UNTIL}: {why}",
                DeprecationWarning,
                stacklevel=_callers_level(),
            )
    return {k: v for k, v in data.items() if k not in DEPRECATED}


def _callers_level() -> int:
    """The `stacklevel` of the first frame outside relaybus and pydantic, seen from the
    caller of this: the line that built the config, which a warning should point at."""
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_globals.get("__name__", "").split(".")[0] in INTERNAL:
        frame, level = frame.f_back, level + 1
    return level


def _problem(err: ErrorDetails) -> str:
    """ "field: what is wrong"; a check over several fields names them itself."""
    where = ".".join(str(p) for p in err["loc"])
    text = err["msg"].removeprefix("Value error, ")
    return f"{where}: {text}" if where else text


def _local(url: str) -> bool:
    """A unix socket, or TCP to loopback only: where a password cannot be sniffed."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return True
    hosts = parts.netloc.rsplit("@", 1)[-1].split(",")  # cluster and sentinel URLs list several
    return all(loopback(urlsplit(f"//{h}").hostname or "localhost") for h in hosts)


def loopback(host: str) -> bool:
    """`host` is this machine, by name or by address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
