"""Versioned records: small JSON documents under the bus prefix, each written with a
compare-and-set in one atomic step (docs/protocol-backends.md#versioned-records).

`Records(bus, "a2a.tasks")` is a namespace: one Redis hash, so on a Cluster every record
of a namespace is on one node and a write is one script there. Each record has a value
(JSON), a version (1 for the first write, +1 for each later one) and a tag (a short
string the writer chooses, e.g. a state) that a write can be conditional on. This is
what a protocol's shared task store needs, the A2A one among them.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from .engine.retained import pairs
from .errors import RelayBusError
from .keys import validate_topic

if TYPE_CHECKING:
    from .bus import Bus

TAG_RE = re.compile(r"[A-Za-z0-9_.:\-]{0,64}")


class VersionConflictError(RelayBusError):
    """A conditional `Records.put` found the record otherwise than it asked: nothing was
    written. `version` (0: absent) and `tag` are what is stored."""

    def __init__(self, namespace: str, key: str, version: int, tag: str, wanted: str) -> None:
        found = "no record" if version == 0 else f"version {version}, tag {tag!r}"
        super().__init__(f"record {key!r} in {namespace!r}: wanted {wanted}, found {found}; nothing written")
        self.key, self.version, self.tag = key, version, tag


@dataclass(frozen=True, slots=True)
class Record:
    value: Any
    version: int
    tag: str


class Records:
    """One namespace of versioned records on a bus (used once it is connected). Part of the
    core: its commands take the engine's one road to Redis (docs/architecture.md)."""

    def __init__(self, bus: Bus, namespace: str) -> None:
        validate_topic(namespace)  # the same names as topics
        self.bus, self.namespace = bus, namespace
        # '#' is in no topic name: the hash tag is never a topic's
        self.key = f"{bus.keys.prefix}:{{#records/{namespace}}}:records"

    async def get(self, key: str) -> Record | None:
        stored = await self.bus._engine.ctx.scripts.call("HGET", [self.key], [key])
        return None if stored is None else _record(stored)

    async def all(self) -> dict[str, Record]:
        """Every record of the namespace (one HGETALL)."""
        stored = await self.bus._engine.ctx.scripts.call("HGETALL", [self.key], [])
        return {field.decode(): _record(raw) for field, raw in pairs(stored).items()}

    async def put(
        self,
        key: str,
        value: Any,
        *,
        version: int | None = None,
        tag: str = "",
        when_tag_in: Collection[str] | None = None,
    ) -> int:
        """Write `value` (JSON) with `tag`; returns the new version. With `version`, only if
        that is the stored version (0: only if there is no record); with `when_tag_in`, only
        if a record is stored and its tag is one of them. Otherwise VersionConflictError."""
        if not TAG_RE.fullmatch(tag) or any(not t or not TAG_RE.fullmatch(t) for t in when_tag_in or ()):
            raise ValueError(
                f"invalid record tag in {tag!r} / {when_tag_in!r}: up to 64 of A-Z a-z 0-9 _ . : -"
            )
        if when_tag_in is not None and not when_tag_in:
            raise ValueError("when_tag_in must name at least one tag (None: any record)")
        if version is not None and version < 0:
            raise ValueError(f"version must be 0 (absent) or a stored version, got {version}")
        wanted = " and ".join(
            [
                *([f"version {version}" if version else "no record"] if version is not None else []),
                *([f"a tag in {sorted(when_tag_in)}"] if when_tag_in is not None else []),
            ]
        )
        scripts = self.bus._engine.ctx.scripts
        written, found, found_tag = await scripts.call(
            scripts.record_put,
            [self.key],
            [
                key,
                orjson.dumps(value),
                tag,
                "" if version is None else str(version),
                "\n".join(when_tag_in) if when_tag_in is not None else "",
            ],
        )
        if not written:
            raise VersionConflictError(self.namespace, key, int(found), _text(found_tag), wanted)
        return int(found)

    async def delete(self, key: str) -> bool:
        """Remove the record; whether there was one."""
        return bool(await self.bus._engine.ctx.scripts.call("HDEL", [self.key], [key]))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _record(stored: bytes) -> Record:
    version, tag, value = stored.split(b"|", 2)
    return Record(orjson.loads(value), int(version), tag.decode())
