"""TLS and ACL auth: hands the config's `ssl_*` files and ACL `username`/`password` to
redis-py. The config has already checked them (files readable, no password in clear
text to a remote host) when it was built.

Disabled, only what the URL itself says is used (`rediss://` with redis-py's defaults:
system CAs, hostname checked; `user:password@`): the `ssl_*`, `username` and `password`
fields are then ignored, which can only make a connection fail, never weaken it."""

from __future__ import annotations

from typing import Any

from relaybus import BusConfig, hookimpl


@hookimpl
def redis_connection_options(config: BusConfig) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if config.username is not None:
        options["username"] = config.username
    if config.password is not None:
        options["password"] = config.password.get_secret_value()
    if config.deployment.tls:
        options["ssl_check_hostname"] = config.ssl_check_hostname
        for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
            if getattr(config, name) is not None:
                options[name] = getattr(config, name)
    return options
