"""The Lua scripts: one registry, loaded once per client. A line `-- include: x.lua`
at the top of a script pulls in the shared code of scripts/x.lua, once."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Sequence
from functools import cache
from importlib.resources import files
from typing import Any

import redis.asyncio as aioredis
from hiredis import pack_command
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.commands.core import AsyncScript
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MaxConnectionsError,
    MovedError,
    NoScriptError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..connection import UNAVAILABLE, slot_map_read
from .autopipeline import AutoPipeline

REDIRECTS = 5  # MOVED/ASK/TRYAGAIN/CLUSTERDOWN answers followed for one call before giving up
NOSCRIPT_RETRIES = 3  # loads and reruns of calls a server answered NOSCRIPT
NAMES = (
    "append",
    "publish",
    "read",
    "retry",
    "dead_letter",
    "replay",
    "trim",
    "retention",
    "inbox",
    "follow",
    "close_topic",
    "purge",
    "record_put",
)
# (script or command, keys, args); a command's words come before its keys: "XINFO GROUPS"
Call = tuple[AsyncScript | str, Sequence[Any], Sequence[Any]]
_INCLUDE = re.compile(r"^-- include: ([a-z_]+)\.lua$", re.MULTILINE)


@cache
def source(name: str) -> str:
    """The text Redis runs for scripts/<name>.lua, includes expanded (each once)."""
    text = (files("relaybus") / "scripts" / f"{name}.lua").read_text()
    seen: list[str] = []

    def expand(match: re.Match[str]) -> str:
        included = match.group(1)
        if included in seen:
            return ""
        seen.append(included)
        return _INCLUDE.sub(expand, (files("relaybus") / "scripts" / f"{included}.lua").read_text())

    return _INCLUDE.sub(expand, text)


class Scripts:
    """Every script, registered on one client. `call` runs one, `run` several in one
    round trip; both load a script the server lacks (NOSCRIPT) and run it again. On one
    server, calls from concurrent tasks share round trips (autopipeline.py)."""

    append: AsyncScript
    publish: AsyncScript
    read: AsyncScript
    retry: AsyncScript
    dead_letter: AsyncScript
    replay: AsyncScript
    trim: AsyncScript
    retention: AsyncScript
    inbox: AsyncScript
    follow: AsyncScript
    close_topic: AsyncScript
    purge: AsyncScript
    record_put: AsyncScript

    def __init__(self, client: aioredis.Redis | RedisCluster) -> None:
        self.client = client
        self._cluster = client if isinstance(client, RedisCluster) else None
        self.cluster = self._cluster is not None  # keys of different topics are on different nodes
        self._stale = False  # a cluster node failed: ask the cluster for its slots again first
        # one server only: a Cluster has a pool per node, and under Sentinel a held connection
        # outlived a failover badly (the sentinel test lost acknowledged publishes): pooled there
        standalone = self._cluster is None and not isinstance(client.connection_pool, SentinelConnectionPool)
        for name in NAMES:
            setattr(self, name, client.register_script(source(name)))
        self._auto = (
            AutoPipeline(client.connection_pool.get_connection, _exchange, self._merge_appends)
            if standalone
            else None
        )

    def _merge_appends(self, calls: list[Call]) -> tuple[list[Call], list[int]]:
        """Plain appends to one topic from callers sharing a round trip go as one append.lua
        call: one script run and one reply instead of one each (64 tasks publishing: half
        the time per message). The appends were concurrent, so no order among them is
        lost; one call succeeds or is refused whole, as each would have been."""
        sent: list[Call] = []
        carrier: list[int] = []
        appends: dict[tuple[Any, ...], int] = {}
        for call in calls:
            script, keys, args = call
            if script is not self.append:
                carrier.append(len(sent))
                sent.append(call)
                continue
            at = appends.get(tuple(keys))
            if at is None:
                at = appends[tuple(keys)] = len(sent)
                sent.append((script, keys, list(args)))
            else:
                sent[at][2].extend(args)  # type: ignore[attr-defined]
            carrier.append(at)
        return sent, carrier

    async def call(self, script: AsyncScript | str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """One call - a script, or a plain command named by a string (see `run`); its
        error raised."""
        if self._auto is not None:  # the usual case first, without run()'s bookkeeping
            (reply,) = await self._auto.run([(script, keys, args)])
            if not isinstance(reply, NoScriptError):
                if isinstance(reply, Exception):
                    raise reply
                return reply
        (reply,) = await self.run([(script, keys, args)])
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def run(self, calls: Sequence[Call], tail: Sequence[Call] = ()) -> list[Any]:
        """Run calls - a script, or a plain command named by a string - in one pipelined
        round trip (on a Cluster, one per node, concurrently); replies in order, an error
        as its exception. Script calls refused with NOSCRIPT (a restarted, new or newly
        promoted server) are loaded - on the connection they go by - and run again, a few
        times: they did not run at all. `tail` commands follow on the connection the last
        execution of the last call used (WAIT counts that connection's writes); their
        replies come last."""
        replies = await self._pipelined(calls, tail)
        for _ in range(NOSCRIPT_RETRIES):
            missing = [i for i, r in enumerate(replies[: len(calls)]) if isinstance(r, NoScriptError)]
            if not missing:
                break
            await self._load({id(calls[i][0]): calls[i][0] for i in missing}.values(), pooled=bool(tail))
            again = await self._pipelined([calls[i] for i in missing], tail)
            for i, reply in zip(missing, again, strict=False):
                replies[i] = reply
            replies[len(calls) :] = again[len(missing) :]
        return replies

    async def _load(self, scripts: Iterable[Any], pooled: bool) -> None:
        """SCRIPT LOAD where the calls will go: on one server over the held connection
        (a pooled one may reach another server while Sentinel fails over), else as
        redis-py routes it (a Cluster: every master)."""
        for script in scripts:
            assert isinstance(script, AsyncScript)
            if self._auto is not None and not pooled:
                [loaded] = await self._auto.run([("SCRIPT", [], ["LOAD", script.script])])
                if isinstance(loaded, Exception):
                    raise loaded
            else:
                await self.client.script_load(script.script)

    async def _pipelined(self, calls: Sequence[Call], tail: Sequence[Call] = ()) -> list[Any]:
        if not calls:
            return []
        if self._auto is not None and not tail:
            return await self._auto.run(calls)
        if self._cluster is None:  # WAIT, which holds its connection up to its timeout: alone
            pool = self.client.connection_pool
            connection = await pool.get_connection()
            try:
                return await _exchange(connection, [*calls, *tail])
            finally:
                await pool.release(connection)
        return await self._on_nodes(self._cluster, calls, tail)

    async def close(self) -> None:
        if self._auto is not None:
            await self._auto.close()

    async def _on_nodes(
        self, cluster: RedisCluster, calls: Sequence[Call], tail: Sequence[Call]
    ) -> list[Any]:
        """Each node's share of `calls` in one round trip to it, all nodes at once. A call
        answered MOVED, ASK, TRYAGAIN or CLUSTERDOWN did not run: it is sent again where
        the answer points (after a slot migration or failover), up to REDIRECTS times."""
        with slot_map_read():
            if self._stale:
                await cluster.nodes_manager.initialize()
                self._stale = False
            await cluster.initialize()
        replies: list[Any] = [None] * (len(calls) + len(tail))
        todo = list(range(len(calls)))
        asking: dict[int, ClusterNode] = {}
        for attempt in range(REDIRECTS + 1):
            shares: dict[ClusterNode, list[int]] = {}
            for i in todo:
                shares.setdefault(asking.get(i) or cluster.get_node_from_key(calls[i][1][0]), []).append(i)
            last = next((node for node, share in shares.items() if len(calls) - 1 in share), None)
            try:
                answers = await asyncio.gather(
                    *[
                        self._on_node(
                            node,
                            [calls[i] for i in share],
                            any(i in asking for i in share),
                            tail if node is last and tail else (),
                        )
                        for node, share in shares.items()
                    ]
                )
            except UNAVAILABLE:
                self._stale = True
                raise
            todo, asking, pause = [], {}, False
            for (node, share), answer in zip(shares.items(), answers, strict=True):
                if node is last:
                    replies[len(calls) :] = answer[len(share) :]
                for i, reply in zip(share, answer, strict=False):
                    replies[i] = reply
                    if isinstance(reply, (AskError, TryAgainError, ClusterDownError)) and attempt < REDIRECTS:
                        todo.append(i)
                        if isinstance(reply, MovedError):
                            await cluster.nodes_manager.move_slot(reply)
                        elif isinstance(reply, AskError) and (
                            target := cluster.nodes_manager.get_node(reply.host, reply.port)
                        ):
                            asking[i] = target
                        else:
                            pause = True
            if not todo:
                break
            todo.sort()
            if pause:  # a slot on its way, or a failover: wait a moment and ask again
                await asyncio.sleep(0.05 * (attempt + 1))
                try:
                    with slot_map_read():
                        await cluster.nodes_manager.initialize()
                except UNAVAILABLE:
                    self._stale = True
                    raise
        for reply in replies:
            if isinstance(reply, (TryAgainError, ClusterDownError)):  # still, after the retries
                self._stale = True
                raise RedisConnectionError(f"Redis Cluster unavailable: {reply}")
        return replies

    @staticmethod
    async def _on_node(
        node: ClusterNode, calls: Sequence[Call], asking: bool, tail: Sequence[Call]
    ) -> list[Any]:
        while True:
            try:
                connection = node.acquire_connection()
                break
            except MaxConnectionsError:  # every one busy: each comes back within a socket_timeout
                await asyncio.sleep(0.001)
        try:
            if not asking:
                return await _exchange(connection, [*calls, *tail])
            # ASKING lets the next command into a slot being imported (harmless elsewhere)
            asked = [x for call in calls for x in (("ASKING", [], []), call)]
            replies = await _exchange(connection, [*asked, *tail])
            return [*replies[1 : 2 * len(calls) : 2], *replies[2 * len(calls) :]]
        finally:
            node.release(connection)


async def _exchange(
    connection: Connection, calls: Sequence[Call], socket_timeout: float | None = None
) -> list[Any]:
    """Straight on one connection: every reply here is used as Redis sends it, so
    redis-py's Pipeline (reply callbacks, stack, resets) is only overhead - a quarter of
    the reader's time per round when profiled. Packed by hiredis (a seventh of redis-py's
    packing time). `socket_timeout`: seconds for the round trip, the send and every reply,
    on a connection whose own is off (autopipeline.py: one deadline a round trip, where
    redis-py's own makes a task per send and a timeout per reply; moving the deadline on
    after the send was a fifth of that deadline's cost, profiled)."""
    packed = b"".join(
        [
            pack_command(
                (*what.split(), *keys, *args)  # "XINFO GROUPS": a command of two words
                if isinstance(what, str)
                else ("EVALSHA", what.sha, len(keys), *keys, *args)
            )
            for what, keys, args in calls
        ]
    )
    try:
        async with asyncio.timeout(socket_timeout):
            await connection.send_packed_command(packed)
            replies: list[Any] = []
            for _ in calls:
                try:
                    replies.append(await connection.read_response())
                except ResponseError as exc:  # that command's error; the others stand
                    replies.append(exc)
    except TimeoutError:
        await connection.disconnect()  # replies may be left unread: never reuse it
        raise RedisTimeoutError(
            f"Timeout: no answer from {connection.host}:{connection.port} "
            f"within socket_timeout ({socket_timeout} s)"
        ) from None
    except BaseException:
        await connection.disconnect()
        raise
    return replies
