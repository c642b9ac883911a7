"""What only a Redis Cluster can break: scripts crossing slots, reading spread over the
masters, and a slot moving to another master while a bus publishes and consumes."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shlex
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import key_slot

from relaybus import Bus, BusUnavailableError, Message, ReplicationError
from relaybus.deployment import parse
from relaybus.embedded import free_port
from relaybus.keys import Keys
from relaybus.redact import redact_url

from .conftest import sync_client
from .helpers import running, wait_for
from .test_acl import PASSWORD, PREFIX, USER, documented_rule
from .topologies import cluster, cluster_url, migrate_slot

pytestmark = pytest.mark.usefixtures("cluster_redis_url")
SCALING = Path(__file__).parent.parent / "docs" / "scaling.md"


def _errorstats(url: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for host, port in _masters(url):
        client = redis.Redis(host=host, port=port)
        out.update({f"{port}:{k}": str(v) for k, v in client.info("errorstats").items()})
        client.close()
    return out


def _masters(url: str) -> list[tuple[str, int]]:
    host, port = parse(url).nodes[0]
    client = redis.Redis(host=host, port=port)
    try:
        return [(str(m[0].decode()), int(m[1])) for _, _, m, *_ in client.execute_command("CLUSTER", "SLOTS")]
    finally:
        client.close()


async def test_no_script_crosses_slots(cluster_redis_url: str, prefix: str) -> None:
    """Every policy at once (lanes, dedup, delay, retries, DLQ and replay, trim): Redis
    counts no CROSSSLOT error on any master."""
    before = {k: v for k, v in _errorstats(cluster_redis_url).items() if "CROSSSLOT" in k}
    handled: list[Message] = []
    async with Bus.from_url(
        cluster_redis_url, prefix=prefix, claim_idle_ms=1000, max_attempts=2, retry_backoff_s=0.05
    ) as bus:

        @bus.subscribe(["jobs.a", "jobs.b"], group="workers")
        async def handle(message: Message) -> None:
            if message.payload.get("fail"):
                raise RuntimeError("boom")
            handled.append(message)

        await bus.publish("jobs.a", {"n": 1}, priority=5, dedup_key="k1")
        await bus.publish("jobs.a", {"n": 1}, dedup_key="k1")
        await bus.publish("jobs.b", {"n": 2}, delay=0.2)
        await bus.publish("jobs.b", {"fail": True})
        await bus.publish_many("jobs.a", [{"n": i} for i in range(10)])
        async with running(bus):
            await wait_for(lambda: len(handled) == 12, 10)
            for _ in range(100):
                if await bus.dead_letters("jobs.b"):
                    break
                await asyncio.sleep(0.05)
            assert len(await bus.dead_letters("jobs.b")) == 1
            assert await bus.replay_dead_letters("jobs.b") == 1
        await bus.trim("jobs.a", keep_len=0)
        await bus.cleanup()
    after = {k: v for k, v in _errorstats(cluster_redis_url).items() if "CROSSSLOT" in k}
    assert after == before


async def test_a_retry_fence_stays_in_the_topic_slot(cluster_redis_url: str, prefix: str) -> None:
    """A retry's sent markers and fence key (built inside the scripts from a prefix key),
    and a first attempt reading them, on the fast path and the script path: no CROSSSLOT,
    and the fenced copy is not appended."""
    from relaybus.engine.publisher import Write
    from relaybus.message import encode

    before = {k: v for k, v in _errorstats(cluster_redis_url).items() if "CROSSSLOT" in k}
    async with Bus.from_url(cluster_redis_url, prefix=prefix) as bus:
        await bus.publish("jobs.f", {"n": 1})
        [message] = await bus.history("jobs.f")
        write = Write(encode(message), message.id)
        publisher = bus._engine.publisher
        assert await publisher._scripted("jobs.f", [write], check=(1, "+")) == [message.id]
        await publisher._append("jobs.f", [write])  # a late first attempt: fenced
        assert await publisher._scripted("jobs.f", [Write(write.data, write.id, lane=3)]) == [message.id]
        assert [m.id for m in await bus.history("jobs.f")] == [message.id]
    after = {k: v for k, v in _errorstats(cluster_redis_url).items() if "CROSSSLOT" in k}
    assert after == before


async def test_topics_spread_over_every_master(cluster_redis_url: str, prefix: str) -> None:
    topics = [f"spread.{i}" for i in range(30)]
    keys = Keys(prefix)
    masters = {port for _, port in _masters(cluster_redis_url)}
    handled: set[str] = set()
    async with Bus.from_url(cluster_redis_url, prefix=prefix) as bus:

        @bus.subscribe(topics, group="g")
        async def handle(message: Message) -> None:
            handled.add(message.topic)

        for topic in topics:
            await bus.publish(topic, {"t": topic})
        async with running(bus):
            await wait_for(lambda: len(handled) == len(topics), 10)
    assert {_owner(cluster_redis_url, keys.stream(t)) for t in topics} == masters


async def test_a_slot_moving_to_another_master_during_a_run_loses_nothing(prefix: str) -> None:
    """Its keys MIGRATEd in batches while publishes and reads go on: MOVED and ASK
    answers are followed, every published message is handled."""
    executable = shutil.which("redis-server")
    assert executable
    with cluster(executable) as nodes:
        url = cluster_url(nodes)
        stream = Keys(prefix).stream("moving")
        slot = key_slot(stream.encode())
        published: list[str] = []
        handled: set[str] = set()
        async with Bus.from_url(url, prefix=prefix, claim_idle_ms=1000) as bus:

            @bus.subscribe("moving", group="g")
            async def handle(message: Message) -> None:
                handled.add(message.id)

            done = asyncio.Event()

            async def publish_until_done() -> None:
                # ended by an event, not cancel(): Python 3.11's asyncio.wait_for (inside
                # redis-py's send) can swallow a cancellation that lands as a send completes
                n = 0
                while not done.is_set():
                    n += 1
                    published.append(await bus.publish("moving", {"n": n}))
                    await asyncio.sleep(0.002)

            async with running(bus):
                publisher = asyncio.create_task(publish_until_done())
                await wait_for(lambda: len(handled) >= 200, 10)
                target = next(n for n in nodes if n.port != _owner(url, stream))
                moved = await asyncio.to_thread(migrate_slot, [n.port for n in nodes], slot, target.port)
                count = len(published)
                await wait_for(lambda: len(published) >= count + 200, 20)
                done.set()
                await publisher
                await wait_for(lambda: set(published) <= handled, 20)
        assert moved > 0 and _owner(url, stream) == target.port


def _owner(url: str, key: str) -> int:
    raw = sync_client(url)
    try:
        return int(raw.get_node_from_key(key).port)  # type: ignore[union-attr]
    finally:
        raw.close()


async def test_a_confined_acl_user_with_the_documented_cluster_commands(cluster_redis_url: str) -> None:
    """docs/security.md's rule plus docs/scaling.md's cluster commands, on every master."""
    [line] = [s for s in SCALING.read_text().splitlines() if s.startswith(f"ACL SETUSER {USER} +")]
    rule = [*documented_rule(PREFIX), *shlex.split(line)[3:]]
    admins = [redis.Redis(host=host, port=port) for host, port in _masters(cluster_redis_url)]
    for admin in admins:
        admin.execute_command("ACL", "SETUSER", USER, *rule)
        admin.execute_command("ACL", "LOG", "RESET")
    nodes = ",".join(f"{host}:{port}" for host, port in _masters(cluster_redis_url))
    handled: list[Message] = []
    try:
        async with Bus.from_url(
            f"redis+cluster://{USER}:{PASSWORD}@{nodes}", prefix=PREFIX, claim_idle_ms=1000
        ) as bus:

            @bus.subscribe(["acl.a", "acl.b", "acl.c"], group="g")
            async def handle(message: Message) -> None:
                handled.append(message)

            for topic in ("acl.a", "acl.b", "acl.c"):
                await bus.publish(topic, {"t": topic}, priority=3, dedup_key=topic)
            async with running(bus):
                await wait_for(lambda: len(handled) == 3, 10)
            assert len(await bus.history("acl.a")) == 1
            await bus.stats()
            await bus.cleanup()
        assert [admin.execute_command("ACL", "LOG") for admin in admins] == [[]] * len(admins)
    finally:
        for admin in admins:
            for key in admin.scan_iter(match=f"{PREFIX}:*"):
                admin.delete(key)
            admin.execute_command("ACL", "DELUSER", USER)
            admin.close()


@pytest.fixture(scope="module")
def replicated() -> Iterator[list[redis.Redis]]:
    """3 masters with a replica each, for the tests that need replicas or change the
    slot map; clients of its masters."""
    executable = shutil.which("redis-server")
    assert executable
    with cluster(executable, replicas=1) as nodes:
        clients = [redis.Redis(port=n.port) for n in nodes]
        yield [c for c in clients if c.info("replication")["role"] == "master"]
        for client in clients:
            client.close()


def _url(masters: list[redis.Redis]) -> str:
    return "redis+cluster://" + ",".join(f"127.0.0.1:{_port(m)}" for m in masters)


def _port(client: redis.Redis) -> int:
    return int(client.connection_pool.connection_kwargs["port"])


def _holder(masters: list[redis.Redis], key: str) -> redis.Redis:
    port = _owner(_url(masters), key)
    return next(m for m in masters if _port(m) == port)


async def test_wait_counts_the_replicas_of_the_master_holding_the_topic(
    replicated: list[redis.Redis], prefix: str
) -> None:
    """min_replicas_acked on a cluster: WAIT runs on the topic's master and counts its
    replicas - one here, though the cluster has three (scaling.md)."""
    async with Bus.from_url(
        _url(replicated), prefix=prefix, min_replicas_acked=1, replica_ack_timeout_ms=500
    ) as bus:
        for topic in ("wait.a", "wait.b", "wait.c"):
            await bus.publish(topic, {"t": topic})
            stream = bus.keys.stream(topic)
            replica = redis.Redis(port=int(_holder(replicated, stream).info("replication")["slave0"]["port"]))
            replica.execute_command("READONLY")
            assert replica.xlen(stream) == 1  # read at once: WAIT already confirmed it
            replica.close()
    async with Bus.from_url(
        _url(replicated), prefix=prefix, min_replicas_acked=2, replica_ack_timeout_ms=200
    ) as bus:
        with pytest.raises(ReplicationError, match=r"1 of 2 replica\(s\) confirmed"):
            await bus.publish("wait.a", {"n": 2})


@pytest.mark.parametrize("back_after_s", [0.5, None], ids=["served-again", "stays-unserved"])
async def test_clusterdown_is_retried_then_reported_as_redis_unavailable(
    replicated: list[redis.Redis], prefix: str, back_after_s: float | None
) -> None:
    """A topic's slot served by no master (CLUSTERDOWN, as during a failover): a publish
    is retried and lands once the slot is served again; while it stays unserved, the
    publish raises BusUnavailableError when publish_timeout_s runs out (scaling.md)."""
    timeout = 3 if back_after_s else 1
    async with Bus.from_url(_url(replicated), prefix=prefix, publish_timeout_s=timeout) as bus:
        stream = bus.keys.stream("down")
        await bus.publish("down", {"n": 0})
        slot, owner = key_slot(stream.encode()), _holder(replicated, stream)
        for master in replicated:  # every master forgets who serves it
            master.execute_command("CLUSTER", "DELSLOTS", slot)
        try:
            publishing = asyncio.create_task(bus.publish("down", {"n": 1}))
            if back_after_s is None:
                with pytest.raises(BusUnavailableError, match="Cluster unavailable"):
                    await publishing
            else:
                await asyncio.sleep(back_after_s)
                assert not publishing.done()
                owner.execute_command("CLUSTER", "ADDSLOTS", slot)
                await asyncio.wait_for(publishing, 10)
        finally:
            with contextlib.suppress(redis.ResponseError):  # served again already
                owner.execute_command("CLUSTER", "ADDSLOTS", slot)
        await wait_for(
            lambda: all(b"cluster_state:ok" in m.execute_command("CLUSTER", "INFO") for m in replicated), 10
        )
        assert [m.payload["n"] for m in await bus.history("down")] == ([0, 1] if back_after_s else [0])


async def test_tryagain_during_a_slot_migration_is_retried(
    replicated: list[redis.Redis], prefix: str
) -> None:
    """A topic's slot half moved (MIGRATING, a key the publish script needs not on the
    source): the publish is answered TRYAGAIN and retried - BusUnavailableError if the
    migration does not end within publish_timeout_s, landing once it does (scaling.md)."""
    async with Bus.from_url(_url(replicated), prefix=prefix, publish_timeout_s=1.5) as bus:
        stream = bus.keys.stream("moving")
        await bus.publish("moving", {"n": 0})
        slot, source = key_slot(stream.encode()), _holder(replicated, stream)
        target = next(m for m in replicated if m is not source)
        ids = {_port(m): m.execute_command("CLUSTER", "MYID").decode() for m in replicated}
        target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[_port(source)])
        source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[_port(target)])
        try:
            with pytest.raises(BusUnavailableError, match="rehashing of slot"):  # dedup: a key not there
                await bus.publish("moving", {"n": 1}, dedup_key="k1")
            publishing = asyncio.create_task(bus.publish("moving", {"n": 2}, dedup_key="k2"))
            await asyncio.sleep(0.3)
            assert not publishing.done()
        finally:
            await asyncio.to_thread(migrate_slot, [_port(m) for m in replicated], slot, _port(target))
        await asyncio.wait_for(publishing, 10)
        assert [m.payload["n"] for m in await bus.history("moving")] == [0, 2]


async def test_an_unreachable_cluster_is_bus_unavailable_naming_its_seeds(prefix: str) -> None:
    """redis-py's RedisClusterUnreachableError is no ConnectionError: connect() and every
    call gave it as it was, naming one node. Now each is a BusUnavailableError naming
    the call and the seed nodes (the URL, its password redacted)."""
    closed = f"redis+cluster://u:s3cret@127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    with pytest.raises(
        BusUnavailableError,
        match=rf"^cannot reach Redis at {re.escape(redact_url(closed))}: "
        r"RedisClusterUnreachableError",
    ) as caught:
        await Bus.from_url(closed, prefix=prefix, connect_timeout=0.5).connect()
    assert "s3cret" not in str(caught.value) and "***" in str(caught.value)
    executable = shutil.which("redis-server")
    assert executable
    with cluster(executable) as nodes:
        url = cluster_url(nodes)
        async with Bus.from_url(
            url,
            prefix=prefix,
            publish_timeout_s=0,
            socket_timeout=0.5,
            connect_timeout=0.5,
            claim_idle_ms=1000,
        ) as bus:
            await bus.publish("t", 1)
            [message] = await bus.read("t", group="g")
            for node in nodes:
                node.kill()
            calls = {
                "read()": bus.read("t", group="g"),
                "ack()": bus.ack(message),
                "history()": bus.history("t"),
                "dead_letters()": bus.dead_letters("t"),
                "topics()": bus.topics(),
                "replay_dead_letters()": bus.replay_dead_letters("t"),
                "purge_dead_letters()": bus.purge_dead_letters("t"),
                "trim()": bus.trim("t", keep_len=0),
                "stats()": bus.stats(),
                "memory()": bus.memory(),
                "dead_letter()": bus.dead_letter(message, "x"),
                "publish to 't'": bus.publish("t", 2),
            }
            for name, call in calls.items():
                expected = rf"^{re.escape(name)} failed, Redis unreachable at {re.escape(url)}: "
                with pytest.raises(BusUnavailableError, match=expected):
                    await call
            assert bus.health.state != "connected"
