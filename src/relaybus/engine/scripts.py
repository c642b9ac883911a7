"""The Lua scripts: one registry, loaded once per client. A line `-- include: x.lua`
at the top of a script pulls in the shared code of scripts/x.lua, once."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from importlib.resources import files
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ResponseError

NAMES = ("append", "publish", "read", "retry", "dead_letter", "replay", "trim")
Call = tuple[AsyncScript | str, Sequence[Any], Sequence[Any]]  # (script or command, keys, args)
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
    round trip; both load a script the server lacks (NOSCRIPT) and run it again."""

    append: AsyncScript
    publish: AsyncScript
    read: AsyncScript
    retry: AsyncScript
    dead_letter: AsyncScript
    replay: AsyncScript
    trim: AsyncScript

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        for name in NAMES:
            setattr(self, name, client.register_script(source(name)))

    async def call(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """One script call, loading the script first where the server lacks it."""
        try:
            return await self.client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            script.sha = await self.client.script_load(script.script)
            return await self.client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)

    async def run(self, calls: Sequence[Call], tail: Sequence[Call] = ()) -> list[Any]:
        """Run calls - a script, or a plain command named by a string - in one pipelined
        round trip; replies in order, an error as its exception. Script calls refused
        with NOSCRIPT (a restarted or new server) are loaded and run once more: they
        did not run at all the first time. `tail` commands follow on the same connection
        the last execution of the calls used (WAIT counts that connection's writes)."""
        replies = await self._pipelined([*calls, *tail])
        missing = [i for i, r in enumerate(replies[:len(calls)]) if isinstance(r, NoScriptError)]
        if missing:
            for script in {id(calls[i][0]): calls[i][0] for i in missing}.values():
                assert isinstance(script, AsyncScript)
                script.sha = await self.client.script_load(script.script)
            again = await self._pipelined([*(calls[i] for i in missing), *tail])
            for i, reply in zip(missing, again, strict=False):
                replies[i] = reply
            replies[len(calls):] = again[len(missing):]
        return replies

    async def _pipelined(self, calls: Sequence[Call]) -> list[Any]:
        """Straight on a pooled connection: every reply here is used as Redis sends it,
        so redis-py's Pipeline (reply callbacks, stack, resets) is only overhead - a
        quarter of the reader's time per round when profiled."""
        if not calls:
            return []
        commands = [
            (what, *keys, *args) if isinstance(what, str) else ("EVALSHA", what.sha, len(keys), *keys, *args)
            for what, keys, args in calls
        ]
        pool = self.client.connection_pool
        connection = await pool.get_connection()
        try:
            await connection.send_packed_command(connection.pack_commands(commands))
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await connection.read_response())
                except ResponseError as exc:  # that command's error; the others stand
                    replies.append(exc)
        except BaseException:
            await connection.disconnect()  # replies may be left unread: never reuse it
            raise
        finally:
            await pool.release(connection)
        return replies
