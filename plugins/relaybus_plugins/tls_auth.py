"""TLS and ACL auth: owns the `ssl_*` settings and hands them, with the config's ACL
`username`/`password`, to redis-py. The files are checked readable, and set only with a
rediss:// URL, when the config is built; the core refuses a password in clear text to a
remote host.

Disabled, only what the URL itself says is used (`rediss://` with redis-py's defaults:
system CAs, hostname checked; `user:password@`): the `username` and `password` fields
are then ignored, and `ssl_*` ones refused as unknown, which can only make a
connection fail, never weaken it."""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

from relaybus import BusConfig, hookimpl

FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")


class TlsSettings(BaseModel):
    ssl_ca_certs: str | None = Field(None, description="CA bundle that signs the server (rediss:// only).")
    ssl_certfile: str | None = Field(None, description="Client certificate for mTLS (rediss:// only).")
    ssl_keyfile: str | None = Field(None, description="Client certificate's key (rediss:// only).")
    ssl_check_hostname: bool = Field(True, description="Check the server certificate's host name.")

    @field_validator(*FILES)
    @classmethod
    def _readable(cls, value: str | None) -> str | None:
        if value is not None and not (os.path.isfile(value) and os.access(value, os.R_OK)):
            raise ValueError("not a readable file")
        return value

    @model_validator(mode="after")
    def _with_tls_only(self, info: ValidationInfo) -> TlsSettings:
        config: BusConfig | None = (info.context or {}).get("config")
        for name in FILES:
            if getattr(self, name) is not None and config is not None and not config.deployment.tls:
                raise ValueError(
                    f"{name} is set but the url is not rediss:// (or rediss+...): it would be ignored"
                )
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ValueError("ssl_keyfile needs ssl_certfile")
        return self


@hookimpl
def plugin_settings() -> type[BaseModel]:
    return TlsSettings


@hookimpl
def redis_connection_options(config: BusConfig) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if config.username is not None:
        options["username"] = config.username
    if config.password is not None:
        options["password"] = config.password.get_secret_value()
    if config.deployment.tls:
        tls = config.settings(TlsSettings)
        options["ssl_check_hostname"] = tls.ssl_check_hostname
        for name in FILES:
            if getattr(tls, name) is not None:
                options[name] = getattr(tls, name)
    return options
