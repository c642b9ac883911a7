"""The keyspace: every key of a topic shares one hash tag, so scripts are Cluster-safe."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass

log = logging.getLogger("relaybus")
TOPIC_RE = re.compile(r"[A-Za-z0-9._:\-]{1,200}")
PATTERN_RE = re.compile(r"[A-Za-z0-9._:\-*?\[\]]{1,200}")
PREFIX_RE = re.compile(r"[A-Za-z0-9._:\-]{1,64}")
GLOB_CHARS = frozenset("*?[")


def validate_topic(topic: str) -> str:
    if not isinstance(topic, str) or not TOPIC_RE.fullmatch(topic):
        raise ValueError(
            f"invalid topic {topic!r}: use 1-200 letters, digits or '. _ - :' "
            "(glob characters only in subscription patterns)"
        )
    return topic


def validate_pattern(pattern: str) -> str:
    if not isinstance(pattern, str) or not PATTERN_RE.fullmatch(pattern):
        raise ValueError(
            f"invalid topic pattern {pattern!r}: use 1-200 letters, digits, '. _ - :' "
            "and the globs '*', '?', '[...]'"
        )
    return pattern


def validate_group(group: str) -> str:
    if not isinstance(group, str) or not PREFIX_RE.fullmatch(group):
        raise ValueError(f"invalid group {group!r}: use 1-64 letters, digits or '. _ - :'")
    return group


def registered_topics(members: Iterable[bytes]) -> list[str]:
    """The registry's members that are topic names, sorted. Anything else in the set -
    written by hand or by a foreign client - is skipped: one bad member must not break
    stats(), cleanup or pattern subscriptions for every topic, nor become key names."""
    names = {m.decode(errors="replace") for m in members}
    foreign = sorted(n for n in names if not TOPIC_RE.fullmatch(n))
    if foreign:
        log.warning(
            "relaybus: skipping %d registry member(s) that are no topic names: %r", len(foreign), foreign[:5]
        )
    return sorted(names.difference(foreign))


def lanes_in(members: Iterable[bytes]) -> list[int]:
    """The priority lanes (1-9) a topic's lane set names, ascending; anything else in it
    was not written by relaybus and is skipped (scripts/read.lua does the same)."""
    return sorted(int(m) for m in members if m in _LANES)


_LANES = frozenset(str(n).encode() for n in range(1, 10))


def is_pattern(name: str) -> bool:
    return not GLOB_CHARS.isdisjoint(name)


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under one prefix; nothing outside the prefix is ever touched."""

    prefix: str = "relaybus"

    def __post_init__(self) -> None:
        if not PREFIX_RE.fullmatch(self.prefix) or "{" in self.prefix:
            raise ValueError(f"invalid prefix {self.prefix!r}: 1-64 letters, digits, '. _ - :'")

    def _topic(self, topic: str, suffix: str) -> str:
        return f"{self.prefix}:{{{topic}}}:{suffix}"

    def stream(self, topic: str) -> str:
        return self._topic(topic, "stream")

    def delayed(self, topic: str) -> str:
        return self._topic(topic, "delayed")

    def lane(self, topic: str, lane: int | str = "") -> str:
        """A priority lane's stream; lane 0 is the topic stream itself. With no lane,
        the prefix the scripts extend."""
        return self.stream(topic) if lane in (0, "0") else self._topic(topic, f"lane:{lane}")

    def lanes(self, topic: str) -> str:
        """The set of lanes (1-9) a topic has used."""
        return self._topic(topic, "lanes")

    def retry(self, topic: str, group: str = "") -> str:
        """A group's retry stream; with no group, the prefix the promote script extends."""
        return self._topic(topic, f"retry:{group}")

    def dlq(self, topic: str) -> str:
        return self._topic(topic, "dlq")

    def dedup(self, topic: str, key: str) -> str:
        return self._topic(topic, f"dedup:{key}")

    def sent(self, topic: str, message_id: str = "") -> str:
        """A message's sent marker, left by a retry or an outbox flush (scripts/publish.lua):
        every other attempt of it then appends nothing. With no id, the prefix the scripts extend."""
        return self._topic(topic, f"sent:{message_id}")

    def fence(self, topic: str) -> str:
        """Exists while sent markers of the topic may matter to a first attempt: its
        scripts look for markers only then (one EXISTS, usually of a missing key)."""
        return self._topic(topic, "fence")

    def closed(self, topic: str) -> str:
        """Exists while a topic is closed (bus.close_topic): every publish script refuses it."""
        return self._topic(topic, "closed")

    def wake(self, topic: str) -> str:
        """The topic's wake key, and the pub/sub channel of the same name (scripts/wake.lua)."""
        return self._topic(topic, "wake")

    @staticmethod
    @functools.lru_cache(maxsize=1 << 16)  # asked once per delivered entry
    def topic_of(key: str) -> str:
        """The topic of one of its keys (or channels): what is inside the hash tag."""
        return key[key.index("{") + 1 : key.index("}")]

    def counters(self, topic: str) -> str:
        return self._topic(topic, "counters")

    def retention(self, topic: str) -> str:
        """What cleanup keeps of the topic, whichever process runs it (scripts/retention.lua)."""
        return self._topic(topic, "retention")

    @property
    def registry(self) -> str:
        """A set of every topic name published under this prefix (pattern subscriptions)."""
        return f"{self.prefix}:topics"

    @property
    def closing(self) -> str:
        """A sorted set of closed topics, scored by when their keys expire (ms): cleanup
        takes each out of the registry once its keys are gone (engine/follow.py)."""
        return f"{self.prefix}:closing"

    def inbox(self, name: str) -> str:
        """A requesting bus's reply inbox (engine/replies.py): outside every topic."""
        return f"{self.prefix}:inbox:{{{name}}}"

    def channel(self, topic: str) -> str:
        """The broadcast channel of a topic (or of a listen pattern). The topic sits in
        braces, which neither prefixes nor topics may contain, so a pattern of one prefix
        never matches another prefix's channels (`a:bc:*` would match prefix `a:bc`'s)."""
        return f"{self.prefix}:bc:{{{topic}}}"
