"""One adapter per library for bench_peers.py: the same few operations, each done the
library's own way (its publish call, its batch call if it has one, its worker).

Every adapter works in one namespace (`ns`, unique per run): a key, a key prefix or a
queue name, so that nothing of one run is seen by another and `bench_peers.py` can
delete a run's keys by pattern afterwards. Handlers call `self.sink(payload)` with the
payload as the library decoded it; the benchmark counts and checks those calls.

Settings (each library's own fast path, documented in `describe()`):

- every worker runs 32 handlers at once (CONCURRENCY);
- no per-message log lines (relaybus writes none; FastStream gets `logger=None`, streaq
  tasks `silent=True`; taskiq and SAQ log at INFO, which Python drops by default);
- no results kept: a message bus has none. taskiq's default result backend keeps
  nothing; streaq tasks get `ttl=0`, SAQ jobs `ttl=-1` (their defaults keep each result
  for 5 and 10 minutes).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any, ClassVar

import orjson
import redis.asyncio as aioredis

CONCURRENCY = 32
PREFETCH = 2 * CONCURRENCY  # relaybus's default prefetch; FastStream's read size is set to it
GROUP = "bench"
BATCH = 100

Sink = Callable[[Any], None]


class Unavailable(Exception):
    """This library has no way to do what the scenario asks; the message says why."""


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


class Peer:
    """What each library implements. The publish methods are timed by the caller."""

    name: ClassVar[str]
    package: ClassVar[str]
    no_batch: ClassVar[str | None] = None  # why there is no batch publish, if there is none

    def __init__(self, url: str, ns: str) -> None:
        self.url, self.ns = url, ns
        self.sink: Sink = lambda payload: None

    @classmethod
    def describe(cls) -> str:
        raise NotImplementedError

    @classmethod
    def check_installed(cls) -> None:
        """ImportError when the library is missing (the column then reads n/a)."""

    async def open(self) -> None:
        """Connect for publishing."""

    async def close(self) -> None:
        """Stop whatever is still running, close every connection."""

    async def publish(self, payload: Any) -> None:
        raise NotImplementedError

    async def publish_batch(self, payloads: list[Any]) -> None:
        raise Unavailable(self.no_batch or "no batch publish")

    async def prefill(self, payload: Any, n: int) -> None:
        """Put n messages in the queue, untimed, as fast as the library's own format allows."""
        for _ in range(n // BATCH):
            await self.publish_batch([payload] * BATCH)

    async def start(self, sink: Sink) -> None:
        """Start the worker/subscriber (CONCURRENCY handlers) on what is there and what comes."""
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def outstanding(self) -> int:
        """Messages delivered but not yet acknowledged (or still queued): 0 once all are done."""
        raise NotImplementedError


# -- raw redis-py: the ceiling ---------------------------------------------------------------


class Raw(Peer):
    name = "raw redis-py"
    package = "redis"

    @classmethod
    def describe(cls) -> str:
        return (
            "redis.asyncio, hiredis parser. Publish: awaited `XADD key * v 1 m <json>` (the fields "
            "bench_core.py uses); batch: the same XADD x100 in one pipeline; 64 tasks: awaited "
            "XADD from 64 tasks on redis-py's connection pool (shown; the ratios of that row are "
            "against the pipelined XADD). Consume: one loop, "
            "`XREADGROUP COUNT 100`, decode each entry, call the handler, `XACK` the batch "
            "pipelined with the next read (no handler concurrency: the ceiling)."
        )

    async def open(self) -> None:
        self.r = aioredis.Redis.from_url(self.url)
        self.key = f"{self.ns}raw"
        self.task: asyncio.Task[None] | None = None

    async def close(self) -> None:
        await self.stop()
        await self.r.aclose()

    async def publish(self, payload: Any) -> None:
        await self.r.xadd(self.key, {"v": "1", "m": orjson.dumps(payload)})

    async def publish_batch(self, payloads: list[Any]) -> None:
        async with self.r.pipeline(transaction=False) as pipe:
            for payload in payloads:
                pipe.xadd(self.key, {"v": "1", "m": orjson.dumps(payload)})
            await pipe.execute()

    async def prefill(self, payload: Any, n: int) -> None:
        encoded = orjson.dumps(payload)
        for start in range(0, n, 1000):
            async with self.r.pipeline(transaction=False) as pipe:
                for _ in range(min(1000, n - start)):
                    pipe.xadd(self.key, {"v": "1", "m": encoded})
                await pipe.execute()

    async def start(self, sink: Sink) -> None:
        self.sink = sink
        with contextlib.suppress(aioredis.ResponseError):  # BUSYGROUP: a later slice of a backlog
            await self.r.xgroup_create(self.key, GROUP, id="0", mkstream=True)
        self.stopping = False
        self.task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        r, key = self.r, self.key
        got = await r.xreadgroup(GROUP, "c1", {key: ">"}, count=BATCH)
        while True:
            ids = []
            for _, entries in got or ():
                for entry_id, fields in entries:
                    self.sink(orjson.loads(fields[b"m"]))
                    ids.append(entry_id)
            if self.stopping:  # read no more; what was read is handled and acknowledged
                if ids:
                    await r.xack(key, GROUP, *ids)
                return
            if ids:
                async with r.pipeline(transaction=False) as pipe:  # ack this batch, read the next
                    pipe.xack(key, GROUP, *ids)
                    pipe.xreadgroup(GROUP, "c1", {key: ">"}, count=BATCH)
                    _, got = await pipe.execute()
            else:
                got = await r.xreadgroup(GROUP, "c1", {key: ">"}, count=BATCH, block=100)

    async def stop(self) -> None:
        # not cancelled: a redis-py read cancelled mid-way was seen to hang for seconds
        if self.task is not None:
            self.stopping = True
            await self.task
            self.task = None

    async def outstanding(self) -> int:
        return int((await self.r.xpending(self.key, GROUP))["pending"])


# -- relaybus --------------------------------------------------------------------------------


class Relaybus(Peer):
    name = "relaybus"
    package = "relaybus"

    @classmethod
    def describe(cls) -> str:
        return (
            f"`Bus.from_url(url, prefix=...)`, default plugins. Publish: awaited `bus.publish`; "
            f"batch: `bus.publish_many(topic, [100 payloads])`; consume: "
            f"`@bus.subscribe(topic, group=..., concurrency={CONCURRENCY})` (prefetch at its "
            f"default, {PREFETCH}) and `bus.run()`; acks batched by the worker."
        )

    async def open(self) -> None:
        from relaybus import Bus

        self.bus = Bus.from_url(self.url, prefix=self.ns)
        await self.bus.connect()
        self.topic = "t"
        self.runner: asyncio.Task[None] | None = None

    async def close(self) -> None:
        await self.stop()
        await self.bus.close()

    async def publish(self, payload: Any) -> None:
        await self.bus.publish(self.topic, payload)

    async def publish_batch(self, payloads: list[Any]) -> None:
        await self.bus.publish_many(self.topic, payloads)

    async def start(self, sink: Sink) -> None:
        from relaybus import Message

        self.sink = sink

        @self.bus.subscribe(self.topic, group=GROUP, concurrency=CONCURRENCY)
        async def handle(message: Message) -> None:
            sink(message.payload)

        self.runner = asyncio.create_task(self.bus.run())

    async def stop(self) -> None:
        if self.runner is not None:
            await self.bus.stop()  # drains: running handlers finish, their acks are sent
            await self.runner
            self.runner = None

    async def outstanding(self) -> int:
        return int(
            (await self.bus._engine.ctx.redis.xpending(self.bus.keys.stream(self.topic), GROUP))["pending"]
        )


# -- FastStream ------------------------------------------------------------------------------


class FastStream(Peer):
    name = "FastStream"
    package = "faststream"

    @classmethod
    def check_installed(cls) -> None:
        import faststream.redis  # noqa: F401

    @classmethod
    def describe(cls) -> str:
        return (
            f"`RedisBroker(url, logger=None)`. Publish: awaited `broker.publish(payload, stream=key)`; "
            f"batch: `broker.publish(..., stream=key, pipeline=pipe)` x100 then `pipe.execute()` "
            f"(its `publish_batch` is for lists only); consume: `@broker.subscriber(stream="
            f"StreamSub(key, group=..., consumer=..., max_records={PREFETCH}), "
            f"max_workers={CONCURRENCY})`, handler body annotated `Any` (no validation), default "
            f"ack policy (one XACK after each handler returns)."
        )

    async def open(self) -> None:
        from faststream.redis import RedisBroker

        self.broker = RedisBroker(self.url, logger=None)
        await self.broker.connect()
        self.r = aioredis.Redis.from_url(self.url)  # pipelines, the group, XPENDING
        self.key = f"{self.ns}fs"
        self.started = False

    async def close(self) -> None:
        await self.stop()
        await self.broker.stop()
        await self.r.aclose()

    async def publish(self, payload: Any) -> None:
        await self.broker.publish(payload, stream=self.key)

    async def publish_batch(self, payloads: list[Any]) -> None:
        async with self.r.pipeline(transaction=False) as pipe:
            for payload in payloads:
                await self.broker.publish(payload, stream=self.key, pipeline=pipe)
            await pipe.execute()

    async def start(self, sink: Sink) -> None:
        from faststream.redis import StreamSub

        self.sink = sink
        # the group at 0: a StreamSub's own declaration would make it at '$', past the backlog
        with contextlib.suppress(aioredis.ResponseError):
            await self.r.xgroup_create(self.key, GROUP, id="0", mkstream=True)
        sub = StreamSub(self.key, group=GROUP, consumer="c1", max_records=PREFETCH)

        @self.broker.subscriber(stream=sub, max_workers=CONCURRENCY)
        async def handle(body: Any) -> None:
            sink(body)

        await self.broker.start()
        self.started = True

    async def stop(self) -> None:
        if self.started:
            await self.broker.stop()
            self.started = False

    async def outstanding(self) -> int:
        return int((await self.r.xpending(self.key, GROUP))["pending"])


# -- taskiq-redis ----------------------------------------------------------------------------


class Taskiq(Peer):
    name = "taskiq-redis"
    package = "taskiq-redis"
    no_batch = "no batch kick (one XADD per kiq)"

    @classmethod
    def check_installed(cls) -> None:
        import taskiq_redis  # noqa: F401

    @classmethod
    def describe(cls) -> str:
        return (
            f"taskiq {package_version('taskiq')}: `RedisStreamBroker(url, queue_name=key, "
            f"consumer_group_name=..., consumer_id='0')` (defaults otherwise: `xread_count=100`, "
            f"`xread_block=2000`, pool of 50), its default result backend (keeps nothing). Publish: "
            f"awaited `task.kiq(payload)`; consume: taskiq's own `Receiver(broker, "
            f"max_async_tasks={CONCURRENCY})` (what `taskiq worker` runs in each worker process; "
            f"`max_prefetch=0` and `ack_type=when_saved`, its defaults: one XACK per message after "
            f"the task returns)."
        )

    async def open(self) -> None:
        from taskiq_redis import RedisStreamBroker

        self.key = f"{self.ns}tq"
        # consumer_id '0': the group starts before the backlog ('$', the default, would skip it)
        self.broker = RedisStreamBroker(
            self.url, queue_name=self.key, consumer_group_name=GROUP, consumer_id="0"
        )

        @self.broker.task(task_name="handle")
        async def handle(payload: Any) -> None:
            self.sink(payload)

        self.task = handle
        await self.broker.startup()
        self.finish: asyncio.Event | None = None
        self.listener: asyncio.Task[None] | None = None

    async def close(self) -> None:
        await self.stop()
        await self.broker.shutdown()

    async def publish(self, payload: Any) -> None:
        await self.task.kiq(payload)

    async def prefill(self, payload: Any, n: int) -> None:
        """Messages made by taskiq's own kiq() (unique task ids, its JSON format), caught at
        broker.kick and written by the XADD kick does, pipelined: it has no batch kick."""
        caught: list[bytes] = []
        kick = self.broker.kick

        async def catch(message: Any) -> None:
            caught.append(message.message)

        self.broker.kick = catch  # type: ignore[method-assign]
        try:
            for _ in range(n):
                await self.task.kiq(payload)
        finally:
            self.broker.kick = kick  # type: ignore[method-assign]
        r = aioredis.Redis(connection_pool=self.broker.connection_pool)
        for start in range(0, n, 1000):
            async with r.pipeline(transaction=False) as pipe:
                for data in caught[start : start + 1000]:
                    pipe.xadd(self.key, {b"data": data})
                await pipe.execute()

    async def start(self, sink: Sink) -> None:
        from taskiq.receiver import Receiver

        self.sink = sink
        receiver = Receiver(self.broker, max_async_tasks=CONCURRENCY, run_startup=False)
        self.finish = asyncio.Event()
        self.listener = asyncio.create_task(receiver.listen(self.finish))

    async def stop(self) -> None:
        if self.listener is not None and self.finish is not None:
            self.finish.set()  # stops fetching, waits for running tasks
            await self.listener
            self.listener = None

    async def outstanding(self) -> int:
        r = aioredis.Redis(connection_pool=self.broker.connection_pool)
        return int((await r.xpending(self.key, GROUP))["pending"])


# -- streaq ----------------------------------------------------------------------------------


class Streaq(Peer):
    name = "streaq"
    package = "streaq"

    @classmethod
    def check_installed(cls) -> None:
        import streaq  # noqa: F401

    @classmethod
    def describe(cls) -> str:
        return (
            f"coredis {package_version('coredis')}: `Worker(redis_url=url, queue_name=ns, "
            f"concurrency={CONCURRENCY}, handle_signals=False)` (prefetch at its default, "
            f"= concurrency), pickle (its default serializer), the task registered "
            f"`@worker.task(silent=True, ttl=0)` (no log lines, no result kept). Publish: awaited "
            f"`task.enqueue(payload)` (one FCALL: task data under its own key, id on the stream); "
            f"batch: `worker.enqueue_many([task.enqueue(p) for p in 100 payloads])` (pipelined); "
            f"consume: `worker.run_async()` in the benchmark's event loop. Publisher and worker are "
            f"two Worker instances, as in two processes."
        )

    def _worker(self) -> Any:
        from streaq import Worker

        worker = Worker(redis_url=self.url, queue_name=self.ns, concurrency=CONCURRENCY, handle_signals=False)

        @worker.task(silent=True, ttl=0, name="handle")
        async def handle(payload: Any) -> None:
            self.sink(payload)

        return worker, handle

    async def open(self) -> None:
        self.stack = contextlib.AsyncExitStack()
        self.client, self.task = self._worker()
        await self.stack.enter_async_context(self.client)
        self.runner: asyncio.Task[None] | None = None
        self.stream = f"streaq:{self.ns}:queues:normal"

    async def close(self) -> None:
        await self.stop()
        await self.stack.aclose()

    async def publish(self, payload: Any) -> None:
        await self.task.enqueue(payload)

    async def publish_batch(self, payloads: list[Any]) -> None:
        await self.client.enqueue_many([self.task.enqueue(p) for p in payloads])

    async def prefill(self, payload: Any, n: int) -> None:
        for start in range(0, n, 1000):
            await self.client.enqueue_many([self.task.enqueue(payload) for _ in range(min(1000, n - start))])

    async def start(self, sink: Sink) -> None:
        self.sink = sink
        worker, _ = self._worker()
        self.runner = asyncio.create_task(worker.run_async())

    async def stop(self) -> None:
        if self.runner is not None:
            self.runner.cancel()  # its shutdown: running tasks finish (shielded) and ack
            with contextlib.suppress(asyncio.CancelledError):
                await self.runner
            self.runner = None

    async def outstanding(self) -> int:
        r = aioredis.Redis.from_url(self.url)
        try:
            if not await r.exists(self.stream):
                return 0
            return int((await r.xpending(self.stream, "workers"))["pending"]) + int(await r.xlen(self.stream))
        finally:
            await r.aclose()


# -- SAQ -------------------------------------------------------------------------------------


class Saq(Peer):
    name = "SAQ"
    package = "saq"
    no_batch = "no batch enqueue (queue.batch() only groups jobs for abort)"

    @classmethod
    def check_installed(cls) -> None:
        import saq.queue.redis  # noqa: F401

    @classmethod
    def describe(cls) -> str:
        return (
            f"`saq.Queue.from_url(url, name=ns)` (a Redis list of job ids, one key per job, "
            f"JSON). Publish: awaited `queue.enqueue('handle', payload=..., ttl=-1)` (one EVALSHA; "
            f"`ttl=-1`: the job is deleted when done, no result kept); consume: `saq.Worker(queue, "
            f"functions=[handle], concurrency={CONCURRENCY})`, `worker.start()` in the benchmark's "
            f"event loop (each of the 32 slots: BLMOVE, GET, SET+PUBLISH when it starts, a MULTI "
            f"when it ends)."
        )

    async def open(self) -> None:
        from saq import Queue

        self.queue = Queue.from_url(self.url, name=self.ns)
        await self.queue.connect()
        self.worker: Any = None
        self.runner: asyncio.Task[None] | None = None

    async def close(self) -> None:
        await self.stop()
        await self.queue.disconnect()

    async def publish(self, payload: Any) -> None:
        await self.queue.enqueue("handle", payload=payload, ttl=-1)

    async def prefill(self, payload: Any, n: int) -> None:
        """Jobs made by SAQ's own enqueue() (its Job, its JSON), caught before its enqueue
        script and written by the commands that script runs (SET, ZADD, RPUSH), pipelined."""
        caught: list[Any] = []
        enqueue = self.queue._enqueue

        async def catch(job: Any) -> Any:
            caught.append(job)
            return job

        self.queue._enqueue = catch  # type: ignore[method-assign]
        try:
            for _ in range(n):
                await self.queue.enqueue("handle", payload=payload, ttl=-1)
        finally:
            self.queue._enqueue = enqueue  # type: ignore[method-assign]
        q, r = self.queue, self.queue.redis
        for start in range(0, n, 1000):
            async with r.pipeline(transaction=False) as pipe:
                for job in caught[start : start + 1000]:
                    pipe.set(job.id, q.serialize(job))
                    pipe.zadd(q._incomplete, {job.id: job.scheduled})
                    pipe.rpush(q._queued, job.id)
                await pipe.execute()

    async def start(self, sink: Sink) -> None:
        from saq import Worker

        self.sink = sink

        async def handle(ctx: Any, *, payload: Any) -> None:
            sink(payload)

        self.worker = Worker(self.queue, functions=[("handle", handle)], concurrency=CONCURRENCY)
        self.runner = asyncio.create_task(self.worker.start())

    async def stop(self) -> None:
        if self.runner is not None:
            await self.worker.stop()
            await self.runner
            self.runner = None

    async def outstanding(self) -> int:
        r = self.queue.redis
        return int(await r.llen(self.queue._queued)) + int(await r.llen(self.queue._active))


PEERS: list[type[Peer]] = [Raw, Relaybus, FastStream, Taskiq, Streaq, Saq]
