"""Promises the documentation makes (docs/wire-format.md, docs/security.md), checked without a server."""

from __future__ import annotations

import ast
from pathlib import Path

import orjson
import pytest
from pydantic import SecretStr

import relaybus
import relaybus_plugins
from relaybus import BusConfig, ConfigError, DecodeError
from relaybus.connection import Health, make_client
from relaybus.message import decode

# the code that runs: the installed packages (the built wheel under nox), or src/ in a dev venv
SOURCES = [Path(relaybus.__file__).resolve().parent, Path(relaybus_plugins.__file__).resolve().parent]
UNPICKLERS = {"pickle", "cPickle", "_pickle", "dill", "marshal", "shelve"}
ENVELOPE = {
    "id": "01JDQ8Z6V3K9N2M4P5R7S8T0WX",
    "topic": "orders",
    "payload": {"n": 1},
    "created_at": 1732675200.5,
}


def entry(**envelope: object) -> dict[bytes, bytes]:
    return {b"v": b"1", b"m": orjson.dumps({**ENVELOPE, **envelope})}


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("colour", "red"),
        ("Topic", "orders"),
        ("payload_type", "json"),
        # fields of Message the reader sets, never the wire: extra='forbid' alone let them in
        ("lane", 3),
        ("group", "g"),
        ("stream_key", "relaybus:{billing}:stream"),
        ("entry_id", "5-0"),
    ],
)
def test_an_envelope_with_a_key_the_wire_format_does_not_know_is_undecodable(key: str, value: object) -> None:
    """docs/wire-format.md, Decoding rules: an envelope with a key not in the envelope table is
    undecodable (new keys need a new wire version) - decode() raises DecodeError."""
    assert decode(entry(), "1-0", "orders").topic == "orders"  # the envelope without the key decodes
    with pytest.raises(DecodeError, match="1-0"):
        decode(entry(**{key: value}), "1-0", "orders")


def test_an_entry_naming_another_topic_than_its_stream_is_undecodable() -> None:
    """docs/wire-format.md, Decoding rules: `topic` must be the topic of the stream the entry was
    read from; an entry naming another topic is undecodable, and the error names both topics."""
    assert decode(entry(), "1-0", "orders").topic == "orders"
    with pytest.raises(DecodeError) as caught:
        decode(entry(topic="billing"), "1-0", "orders")
    assert "'orders'" in str(caught.value) and "'billing'" in str(caught.value)
    assert "1-0" in str(caught.value)


def test_a_password_over_plain_tcp_to_remote_sentinels_is_refused() -> None:
    """A password is never sent over plain TCP to a non-loopback host unless allow_insecure=True:
    for a redis+sentinel:// URL as for redis://; TLS or loopback sentinels are fine."""
    refused = [
        "redis+sentinel://u:pw@10.0.0.5:26379/m",
        "redis+sentinel://:pw@sentinel.example.com:26379/m/2",
        "redis+sentinel://u:pw@127.0.0.1:26379,10.0.0.6:26379/m",  # one remote sentinel is enough
    ]
    for url in refused:
        with pytest.raises(ConfigError, match="plain TCP") as caught:
            BusConfig.build(url=url)
        assert "pw@" not in str(caught.value)
        config = BusConfig.build(url=url, allow_insecure=True)
        assert config.deployment.kind == "sentinel" and config.password is not None
        assert config.password.get_secret_value() == "pw"
    with pytest.raises(ConfigError, match="plain TCP"):
        BusConfig.build(url="redis+sentinel://10.0.0.5:26379/m", password="pw")
    for url in [
        "redis+sentinel://u:pw@127.0.0.1:26379,[::1]:26380/m",
        "redis+sentinel://u:pw@localhost:26379/m",
        "rediss+sentinel://u:pw@10.0.0.5:26379/m",
        "redis+sentinel://10.0.0.5:26379/m",
    ]:  # no password: nothing to sniff
        assert BusConfig.build(url=url).deployment.kind == "sentinel"


class NamesMaster:
    """Stands in for the sentinels: names a master address and nothing else (no server
    is reached - the address it names is never connected to)."""

    def __init__(self, host: str) -> None:
        self.host = host

    async def discover_master(self, service: str) -> tuple[str, int]:
        return self.host, 6379


@pytest.mark.parametrize(
    ("url", "named", "refused"),
    [
        ("redis+sentinel://:pw@127.0.0.1:26379/m", "10.0.0.7", True),
        ("redis+sentinel://:pw@127.0.0.1:26379/m", "127.0.0.1", False),
        ("redis+sentinel://127.0.0.1:26379/m", "10.0.0.7", False),  # no password
    ],
)
async def test_a_password_over_plain_tcp_to_a_remote_master_sentinel_names_is_refused(
    url: str, named: str, refused: bool
) -> None:
    """Loopback sentinels pass the URL check, but the master they name may be remote: it
    is checked when Sentinel names it, before any connection to it."""
    client = make_client(BusConfig.build(url=url))
    pool = client.connection_pool
    pool.sentinel_manager = NamesMaster(named)
    if refused:
        with pytest.raises(ConfigError, match=f"Sentinel names {named}:6379 as master of 'm'") as caught:
            await pool.get_master_address()
        assert "pw" not in str(caught.value).replace("password", "")
    else:
        assert await pool.get_master_address() == (named, 6379)
    insecure = make_client(BusConfig.build(url=url, allow_insecure=True)).connection_pool
    insecure.sentinel_manager = NamesMaster(named)
    assert await insecure.get_master_address() == (named, 6379)
    await client.aclose()


@pytest.mark.parametrize(
    ("error", "secret"),
    [
        # a URL inside the text: redact_url() over the whole text had kept its password
        (ConnectionError("Error connecting to redis://user:s3cretpw@host:6379 (refused)"), None),
        (ConnectionError("AUTH failed for password s3cretpw at 10.0.0.5:6379"), SecretStr("s3cretpw")),
        (
            ConnectionError("Error connecting to redis://user:s3cretpw@host:6379 (refused)"),
            SecretStr("s3cretpw"),
        ),
    ],
)
async def test_the_last_connection_error_is_kept_and_reported_redacted(
    error: BaseException, secret: SecretStr | None
) -> None:
    """The connection state's last error (Health.last_error, and the text handed to on_change)
    never holds the password: neither inside a URL in the error text nor, when the Health knows
    the secret, as a bare occurrence."""
    changes: list[tuple[str, str, str | None]] = []

    async def on_change(old: str, new: str, text: str | None) -> None:
        changes.append((old, new, text))

    health = Health(on_change, secret=secret)
    await health.succeeded()
    await health.failed(error)
    assert health.state == "degraded" and health.failures == 1
    assert health.last_error is not None and "ConnectionError" in health.last_error
    assert "s3cretpw" not in health.last_error and "***" in health.last_error
    assert changes[-1] == ("connected", "degraded", health.last_error)
    await health.failed(error, state="disconnected")
    assert changes[-1][:2] == ("degraded", "disconnected")
    assert all("s3cretpw" not in (text or "") for _, _, text in changes)


def unpickling(source: str) -> list[str]:
    """Every import of an unpickling module, and every `loads`/`load` reached through one, in `source`."""
    found: list[str] = []
    aliases: set[str] = set()  # local names bound to such a module or its load functions
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in UNPICKLERS:
                    found.append(f"import {alias.name}")
                    aliases.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNPICKLERS:
            found.append(f"from {node.module} import {', '.join(a.name for a in node.names)}")
            aliases |= {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.Call):
            func = node.func
            importer = (isinstance(func, ast.Name) and func.id in {"__import__", "import_module"}) or (
                isinstance(func, ast.Attribute) and func.attr == "import_module"
            )
            if importer and any(
                isinstance(a, ast.Constant) and str(a.value).split(".")[0] in UNPICKLERS for a in node.args
            ):
                found.append(f"dynamic import of {ast.unparse(node.args[0])}")
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in {"loads", "load", "Unpickler", "open"}:
            base = func.value
            if isinstance(base, ast.Name) and (base.id in UNPICKLERS or base.id in aliases):
                found.append(f"call {ast.unparse(func)}")
        elif isinstance(func, ast.Name) and func.id in aliases:
            found.append(f"call {func.id}")
    return found


def test_nothing_received_is_ever_unpickled() -> None:
    """No module of relaybus or its built-in plugins imports pickle, cPickle, dill, marshal or
    shelve, or calls loads/load of them: a message is JSON, never unpickled."""
    assert unpickling(
        "import pickle as p\nfrom dill import loads as l\nimport marshal\n"
        "p.loads(b'')\nl(b'')\nmarshal.loads(b'')\n__import__('shelve')\n"
    ) == [
        "import pickle",
        "from dill import loads",
        "import marshal",
        "dynamic import of 'shelve'",
        "call p.loads",
        "call l",
        "call marshal.loads",
    ]
    assert unpickling("import json\njson.loads('1')\nfrom orjson import loads\nloads(b'1')\n") == []
    modules = {
        path.relative_to(root.parent).as_posix(): path for root in SOURCES for path in root.rglob("*.py")
    }
    assert {"relaybus/message.py", "relaybus/engine/reader.py", "relaybus_plugins/dlq.py"} <= set(modules)
    offenders = {
        name: found
        for name, path in modules.items()
        if (found := unpickling(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}
