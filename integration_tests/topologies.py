"""Redis's distributed modes built from plain redis-server processes on loopback: a
3-master Cluster and a Sentinel-watched master with one replica and three sentinels."""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

from relaybus.embedded import EmbeddedRedis


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too, so at most 55535."""
    for _ in range(200):
        port = random.randint(20_000, 45_000)
        if _bindable(port) and _bindable(port + 10_000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def redis_cli(server: str) -> str:
    """The redis-cli that came with `server` (or any on PATH)."""
    sibling = Path(server).with_name("redis-cli")
    found = str(sibling) if sibling.exists() else shutil.which("redis-cli")
    if found is None:
        raise RuntimeError(f"no redis-cli next to {server} nor on PATH")
    return found


def wait_until(check: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError, OSError):
            if check():  # type: ignore[operator]
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not within {seconds}s")


@dataclass(frozen=True)
class TLSFiles:
    """PEM files: the CA, and a certificate and key it signed (the nodes' own, which
    redis-cli presents as its client certificate too)."""

    ca: str
    cert: str
    key: str


@contextlib.contextmanager
def cluster(
    executable: str, masters: int = 3, replicas: int = 0, tls: TLSFiles | None = None
) -> Iterator[list[EmbeddedRedis]]:
    """`masters` cluster-enabled servers, each with `replicas` replicas, joined with
    `redis-cli --cluster create`. With `tls`, clients and the nodes among themselves
    (cluster bus, replication) speak TLS only, with client certificates required;
    each node's port is its TLS port."""
    nodes: list[EmbeddedRedis] = []
    files = ["--cacert", tls.ca, "--cert", tls.cert, "--key", tls.key] if tls else []
    try:
        for _ in range(masters * (1 + replicas)):
            port = cluster_port()
            secure = (
                [
                    "--port",
                    "0",
                    "--tls-port",
                    str(port),
                    "--tls-cluster",
                    "yes",
                    "--tls-replication",
                    "yes",
                    "--tls-ca-cert-file",
                    tls.ca,
                    "--tls-cert-file",
                    tls.cert,
                    "--tls-key-file",
                    tls.key,
                ]
                if tls
                else []
            )
            node = EmbeddedRedis(
                port=port,
                executable=executable,
                args=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                    "--appendonly",
                    "no",
                    *secure,
                ],
            )
            nodes.append(node.start())
        subprocess.run(
            [
                redis_cli(executable),
                *(["--tls", *files] if tls else []),
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in nodes),
                "--cluster-replicas",
                str(replicas),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        clients = [redis.Redis(unix_socket_path=str(n.socket_path)) for n in nodes]  # plain, local

        def formed() -> bool:
            return all(b"cluster_state:ok" in c.execute_command("CLUSTER", "INFO") for c in clients) and all(
                c.info("replication").get("master_link_status", "up") == "up" for c in clients
            )

        wait_until(formed, 30, "cluster_state:ok on every node")
        for client in clients:
            client.close()
        yield nodes
    finally:
        for node in nodes:
            node.close()


def cluster_url(nodes: list[EmbeddedRedis]) -> str:
    return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in nodes)


class SentinelSetup:
    """A master, one replica and three sentinels (quorum 2, down-after 1000 ms); with
    `password` the master and replica require it, with `sentinel_password` the sentinels
    require theirs (requirepass) of clients and of each other."""

    service = "relaybus-test"

    def __init__(
        self,
        executable: str,
        master_args: list[str] | None = None,
        password: str | None = None,
        sentinel_password: str | None = None,
    ) -> None:
        self.executable = executable
        self.password, self.sentinel_password = password, sentinel_password
        auth = ["--masterauth", password] if password else []  # requirepass once started (start() PINGs)
        self.master = EmbeddedRedis(
            port=cluster_port(), executable=executable, args=[*(master_args or []), *auth]
        )
        self.replica = EmbeddedRedis(
            port=cluster_port(),
            executable=executable,
            args=[*(master_args or []), *auth, "--replicaof", "127.0.0.1", "0"],
        )
        self.sentinel_ports = [cluster_port() for _ in range(3)]
        self._dir = tempfile.TemporaryDirectory(prefix="relaybus-sentinel-")
        self._sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        sentinels = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{sentinels}/{self.service}"

    def master_port(self) -> int:
        client = redis.Redis(port=self.sentinel_ports[0], password=self.sentinel_password)
        try:
            return int(client.sentinel_get_master_addr_by_name(self.service)[1])
        finally:
            client.close()

    def start(self) -> SentinelSetup:
        self.master.start()
        self.replica.args[-1] = str(self.master.port)
        self.replica.start()
        for server in (self.master, self.replica) if self.password else ():
            admin = redis.Redis(port=server.port)
            admin.config_set("requirepass", self.password)
            admin.close()
        replica = redis.Redis(port=self.replica.port, password=self.password)
        wait_until(lambda: replica.info("replication")["master_link_status"] == "up", 20, "replica in sync")
        replica.close()
        for port in self.sentinel_ports:
            conf = Path(self._dir.name) / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self._dir.name}\n"
                f"sentinel monitor {self.service} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {self.service} 1000\n"
                f"sentinel failover-timeout {self.service} 4000\n"
                f"sentinel parallel-syncs {self.service} 1\n"
                + (f"sentinel auth-pass {self.service} {self.password}\n" if self.password else "")
                + (
                    f"requirepass {self.sentinel_password}\nsentinel sentinel-pass {self.sentinel_password}\n"
                    if self.sentinel_password
                    else ""
                )
            )
            self._sentinels.append(
                subprocess.Popen(
                    [self.executable, str(conf), "--sentinel"],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for port in self.sentinel_ports:
            client = redis.Redis(port=port, password=self.sentinel_password)

            def knows_all(client: redis.Redis = client) -> bool:
                state = client.sentinel_master(self.service)
                return int(state["num-other-sentinels"]) == 2 and int(state["num-slaves"]) == 1

            wait_until(knows_all, 30, f"sentinel {port} seeing the others and the replica")
            client.close()
        return self

    def close(self) -> None:
        for process in self._sentinels:
            process.terminate()
            process.wait(timeout=10)
        self.master.close()
        self.replica.close()
        self._dir.cleanup()

    def __enter__(self) -> SentinelSetup:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()


def migrate_slot(ports: list[int], slot: int, to: int) -> int:
    """Move one slot and its keys to the master on port `to` the way redis-cli --cluster
    reshard does (IMPORTING/MIGRATING, MIGRATE in batches, SETSLOT NODE on every master
    in `ports`); its key count."""
    clients = {port: redis.Redis(port=port) for port in ports}
    ids = {port: c.execute_command("CLUSTER", "MYID").decode() for port, c in clients.items()}
    ranges = clients[to].execute_command("CLUSTER", "SLOTS")  # [start, end, [host, port, id], ...]
    owner = next(int(master[1]) for start, end, master, *_ in ranges if start <= slot <= end)
    src, dst = clients[owner], clients[to]
    dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[owner])
    src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[to])
    moved = 0
    while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
        src.execute_command("MIGRATE", "127.0.0.1", to, "", 0, 5000, "KEYS", *keys)
        moved += len(keys)
    for client in clients.values():
        client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[to])
        client.close()
    return moved
