"""Fetching for any number of topics on one pooled connection at a time (docs/consuming.md).

Nothing blocks in Redis: a topic is read only when it may hold something - it rang
(doorbell.py), its last read came back full, a delayed entry falls due, or a sweep
probes it - and every read, probe and queued ack of a moment goes out in one pipelined
round trip. Each read is one script call on one topic's keys (one hash slot), so a
Redis Cluster only changes how the calls of a round are grouped by node.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..connection import UNAVAILABLE
from .context import Context
from .groups import Fetch, Groups, group_lost
from .runners import Delivery, Held, Runners
from .scripts import Call
from .settlement import AckKey

log = logging.getLogger("relaybus")
PROBES_PER_ROUND = 64  # probes wait their turn: reads of a round are never held up for long
SWEEP_SPREAD = 0.8  # a sweep's probes are spread over this part of the sweep interval
SWEEP_TICK_S = 0.05  # how often a spread sweep sends its next probes
ACK_DELAY_S = 0.002  # acks alone wait this long for a fetch to ride along with
ACK_BATCH = 64  # ... unless this many are queued
UNARMED_RETRY_S = 1.0  # a topic whose wake key Redis refused (memory full) is read again after this
CLAIMS_PER_ROUND = 16  # claims take a few round trips each; they are rare
MIN_BACKOFF_S, MAX_BACKOFF_S = 0.1, 5.0


@dataclass(eq=False)
class Feed:
    """One topic of one subscription, and what the reader knows about it."""

    runners: Runners
    topic: str
    own_check: bool = True  # the first probe also looks for this consumer's own pending entries
    own: bool = False  # own pending entries to take back before anything new
    own_after: dict[str, str] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)  # read.lua's keys, made once
    idle: bool = False  # entries idle in some consumer, to claim
    idle_cursors: dict[str, str] = field(default_factory=dict)
    due_at: float | None = None  # a timer is set for the topic's next delayed entry
    quiet: bool = False  # last probed drained with nothing pending, and no ring since
    full: bool = False  # its group could not be made, Redis's memory being full (warned once)


class Acks:
    """Acks of handled messages, waiting to go out with the reader's next round trip.
    `on_due` is called for the first ack queued and when `batch` are: the moments the
    reader has something new to decide (not for every ack - each call may wake it)."""

    def __init__(self, on_due: Callable[[], None], batch: int) -> None:
        self._pending: dict[AckKey, list[bytes | str]] = {}
        self._on_due = on_due
        self.batch = batch
        self.count = 0
        self.since = 0.0  # when the oldest queued ack was added (monotonic)

    def add(self, stream: str, group: str, entry_id: bytes | str) -> None:
        self._pending.setdefault((stream, group), []).append(entry_id)
        if not self.count:
            self.since = time.monotonic()
        self.count += 1
        if self.count == 1 or self.count == self.batch:
            self._on_due()

    def take(self) -> dict[AckKey, list[bytes | str]]:
        pending, self._pending, self.count = self._pending, {}, 0
        return pending

    def put_back(self, pending: dict[AckKey, list[bytes | str]]) -> None:
        if pending and not self.count:
            self.since = time.monotonic()
        for key, ids in pending.items():
            self._pending.setdefault(key, []).extend(ids)
            self.count += len(ids)


class Reader:
    """Fetches for every feed of one run loop and hands entries to their runners; owns
    the handlers' ack queue, and sends it in the same round trips. `held`: what this
    bus fetched and has not settled (the runners add and discard, heartbeats keep it)."""

    def __init__(self, ctx: Context, groups: Groups) -> None:
        self.ctx = ctx
        self._groups = groups
        self.acks = Acks(self.kick, ACK_BATCH)
        self.held = Held()
        self._by_topic: dict[str, list[Feed]] = {}
        # feeds that may hold new entries, per subscription; insertion order is turn order
        self._ready: dict[Runners, dict[Feed, None]] = {}
        self._probes: dict[Feed, None] = {}  # probe soon: new feeds, after a lost connection
        self._sweep: deque[Feed] = deque()  # probe in turn, a few every SWEEP_TICK_S
        self._sweep_rate = 0.0  # probes per second while sweeping
        self._sweep_at = 0.0  # when the sweep last sent probes
        self._claims: dict[Feed, None] = {}
        self._timers: list[tuple[float, int, Feed]] = []
        self._seq = itertools.count()
        self._kick = asyncio.Event()
        self._fetching = True
        self._closing = False
        self._ack_deadline: float | None = None  # failing acks are given up after this
        self._give_up = False  # cancelled: acks get one more attempt, no retries
        self._failing = 0.0  # when the round trips began to fail (monotonic); 0: they do not
        self._failures = 0  # round trips failed since
        self._acks_given_up = 0  # acks given up since
        self._no_round = asyncio.Event()
        self._no_round.set()

    # -- what to fetch ---------------------------------------------------------------

    def add(self, feeds: list[Feed]) -> None:
        """New feeds (their topics' wake channels already subscribed): probe each first."""
        for feed in feeds:
            feed.keys = self._groups.read_keys(feed.topic, feed.runners.sub.group)
            self._by_topic.setdefault(feed.topic, []).append(feed)
            self._ready.setdefault(feed.runners, {})
            self._probes[feed] = None
        self.kick()

    def topics(self) -> set[str]:
        return set(self._by_topic)

    def wake(self, topic: str, certain: bool) -> None:
        """A doorbell watcher: the topic rang (certain), or rings may have been missed."""
        for feed in self._by_topic.get(topic, ()):
            feed.quiet = False
            if certain:
                self._mark_ready(feed)
            else:
                self._probes[feed] = None
        self.kick()

    def sweep(self, interval_s: float, everything: bool) -> None:
        """Probe feeds once over the next `interval_s`, for idle entries to claim: those
        that rang or held pending entries since their last probe - or, `everything`,
        every feed, which also finds entries a ring missed (a writer that does not
        ring, such as an older relaybus). Spread out, so thousands of topics cost a
        steady trickle, not a burst that holds up reads. Probes of the last sweep not sent
        yet are sent now: with a short interval (claim_idle_ms of a few hundred ms) the next
        sweep could otherwise replace them before their first tick, every time."""
        for feed in self._sweep:
            self._probes[feed] = None
        self._sweep = deque(
            f for feeds in self._by_topic.values() for f in feeds if everything or not f.quiet
        )
        self._sweep_rate = len(self._sweep) / max(interval_s * SWEEP_SPREAD, SWEEP_TICK_S)
        self._sweep_at = time.monotonic()
        self.kick()

    def _sweep_due(self) -> int:
        """How many sweep probes are due now."""
        if not self._sweep:
            return 0
        due = int((time.monotonic() - self._sweep_at) * self._sweep_rate)
        return min(due, len(self._sweep), PROBES_PER_ROUND)

    def kick(self) -> None:
        self._kick.set()

    def _mark_ready(self, feed: Feed) -> None:
        if not feed.own:
            ready = self._ready[feed.runners]
            ready.pop(feed, None)  # to the back of the line
            ready[feed] = None

    def _schedule(self, feed: Feed, due: float | None) -> None:
        if due is None or (feed.due_at is not None and feed.due_at <= due):
            return
        feed.due_at = due
        heapq.heappush(self._timers, (due, next(self._seq), feed))

    def _fire_timers(self) -> float | None:
        """Make feeds whose delayed entries fell due ready; seconds until the next timer."""
        now = time.time()
        while self._timers and self._timers[0][0] <= now:
            due, _, feed = heapq.heappop(self._timers)
            if feed.due_at == due:
                feed.due_at = None
                self._mark_ready(feed)
        return self._timers[0][0] - now if self._timers else None

    def _acks_due(self) -> float | None:
        """0 when queued acks should go now, else the seconds until they should; None
        with none queued."""
        acks = self.acks
        if not acks.count:
            return None
        if acks.count >= acks.batch or not self._fetching:
            return 0.0
        return max(0.0, acks.since + ACK_DELAY_S - time.monotonic())

    def _has_work(self) -> bool:
        if self._acks_due() == 0.0:
            return True
        if not self._fetching:
            return False
        return bool(
            self._probes
            or self._sweep_due()
            or any(f.runners.room > 0 for f in self._claims)
            or any(ready and runners.hungry for runners, ready in self._ready.items())
        )

    # -- the loop --------------------------------------------------------------------

    async def run(self) -> None:
        """Until close(): rounds while there is work, else wait for a kick or a timer."""
        pause = MIN_BACKOFF_S
        while True:
            wait = self._fire_timers()
            if not self._has_work():
                if self._closing:
                    if self._failing:
                        self._outage_over("run() ended with Redis unavailable")
                    return
                for later in (SWEEP_TICK_S if self._sweep and self._fetching else None, self._acks_due()):
                    if later is not None:
                        wait = later if wait is None else min(wait, later)
                await self._idle(wait)
                continue
            self._no_round.clear()
            try:
                await self._round()
            except UNAVAILABLE as exc:
                # one warning an outage, its end with counts: never a line per attempt
                log.log(
                    logging.DEBUG if self._failing else logging.WARNING,
                    "relaybus reader: Redis unavailable (%s); retrying in %.2fs, then every %.0fs at most",
                    type(exc).__name__,
                    pause,
                    MAX_BACKOFF_S,
                )
                self._failing = self._failing or time.monotonic()
                self._failures += 1
                await self.ctx.health.failed(exc)
                self._give_up_acks_after_deadline(exc)
                self._no_round.set()
                if not (self._closing and self._give_up):
                    await asyncio.sleep(random.uniform(pause / 2, pause))
                pause = min(pause * 2, MAX_BACKOFF_S)
                continue
            finally:
                self._no_round.set()
            pause = MIN_BACKOFF_S
            self._ack_deadline = None
            if self._failing:
                self._outage_over("Redis answers again")
                await self.ctx.health.succeeded()

    def _outage_over(self, how: str) -> None:
        """The end of an outage, in one line: how long, how many round trips failed, how
        many acks were given up (a warning then: those messages are delivered again)."""
        log.log(
            logging.WARNING if self._acks_given_up else logging.INFO,
            "relaybus reader: %s after %.1fs (%d round trip(s) failed); acks given up meanwhile: "
            "%d (those messages are delivered again)",
            how,
            time.monotonic() - self._failing,
            self._failures,
            self._acks_given_up,
        )
        self._failing, self._failures, self._acks_given_up = 0.0, 0, 0

    async def _idle(self, seconds: float | None) -> None:
        """Wait for a kick, or `seconds`."""
        self._kick.clear()
        timer = None if seconds is None else asyncio.get_running_loop().call_later(seconds, self._kick.set)
        try:
            await self._kick.wait()
        finally:
            if timer is not None:
                timer.cancel()

    def stop_fetching(self, give_up_acks: bool = False) -> None:
        """Fetch nothing more; with `give_up_acks` (cancellation), acks that cannot be sent
        at the next attempt are given up at once (their messages are delivered again)."""
        self._fetching = False
        self._give_up = self._give_up or give_up_acks
        self.kick()

    async def between_rounds(self) -> None:
        """Return once no round trip is under way (what it fetched has been handed out)."""
        await self._no_round.wait()

    def close(self) -> None:
        """run() sends what acks are queued, then returns."""
        self._fetching, self._closing = False, True
        self.kick()

    def _give_up_acks_after_deadline(self, exc: BaseException) -> None:
        """Acks are retried for half of claim_idle_ms: later, a reclaim may have handed
        the message out again anyway."""
        now = time.monotonic()
        if self._ack_deadline is None and not self._give_up:
            self._ack_deadline = now + self.ctx.config.claim_idle_ms / 2000
        elif (self._give_up or now > (self._ack_deadline or 0)) and self.acks.count:
            count = self.acks.count
            self.acks.take()
            log.log(
                logging.DEBUG if self._acks_given_up else logging.WARNING,
                "relaybus could not send acks of %d message(s) (%s); they will be delivered again",
                count,
                type(exc).__name__,
            )
            self._acks_given_up += count

    async def _round(self) -> None:
        if self._fetching and self._claims:  # before reads: a subscription always busy would
            await self._claim()  # otherwise hand all its room to new entries, every round
        acks = self.acks.take()
        calls: list[Call] = [("XACK", [stream], [group, *ids]) for (stream, group), ids in acks.items()]
        plan = self._plan(calls) if self._fetching else []
        try:
            replies = await self.ctx.scripts.run(calls)
        except BaseException:
            self.acks.put_back(acks)
            for feed, count in plan:
                if count:
                    self._mark_ready(feed)
                else:
                    self._probes[feed] = None
            raise
        for (feed, count), reply in zip(plan, replies[len(acks) :], strict=True):
            self._fetched(feed, count, reply)

    def _plan(self, calls: list[Call]) -> list[tuple[Feed, int]]:
        """Add this round's probes and reads to `calls`: every hungry subscription's room
        shared among its ready feeds, in turn."""
        groups, consumer, plan = self._groups, self.ctx.consumer, []
        idle_ms = self.ctx.config.claim_idle_ms
        probes = list(itertools.islice(self._probes, PROBES_PER_ROUND))
        for feed in probes:
            del self._probes[feed]
        swept = self._sweep_due()
        if swept:
            self._sweep_at += swept / self._sweep_rate
            probes += [self._sweep.popleft() for _ in range(swept)]
        for feed in probes:
            sub = feed.runners.sub
            calls.append(
                groups.read_call(
                    feed.topic, sub.group, consumer, 0, sub.start, idle_ms, feed.own_check, feed.keys
                )
            )
            plan.append((feed, 0))
        for runners, ready in self._ready.items():
            if not ready or not runners.hungry:
                continue
            room = runners.room
            share = max(1, room // len(ready))
            while ready and room > 0:
                feed = next(iter(ready))
                del ready[feed]
                count = min(share, room)
                room -= count
                calls.append(
                    groups.read_call(
                        feed.topic, runners.sub.group, consumer, count, runners.sub.start, keys=feed.keys
                    )
                )
                plan.append((feed, count))
        return plan

    def _fetched(self, feed: Feed, count: int, reply: Any) -> None:
        group = feed.runners.sub.group
        try:
            fetch: Fetch = self._groups.read_reply(feed.topic, group, reply)
        except Exception as exc:
            if str(exc).startswith("NOROOM"):  # the group cannot be made while Redis is full
                if not feed.full:
                    log.warning(
                        "relaybus: %s (topic %r); trying again every %.0f s", exc, feed.topic, UNARMED_RETRY_S
                    )
                feed.full = True
                self._schedule(feed, time.time() + UNARMED_RETRY_S)
                return
            if not group_lost(exc):
                raise
            self._mark_ready(feed)  # deleted under us: the next read makes the group again
            return
        feed.full = False
        self._schedule(feed, fetch.next_due)
        if fetch.drained and not fetch.armed:  # no ring will come: look again by ourselves
            self._schedule(feed, time.time() + UNARMED_RETRY_S)
        if count == 0:  # a probe
            feed.own_check = False
            feed.quiet = fetch.drained and not (fetch.pending or fetch.idle or fetch.own)
            feed.own, feed.idle = feed.own or fetch.own, feed.idle or fetch.idle
            if feed.own or feed.idle:
                self._claims[feed] = None
            if not fetch.drained:
                self._mark_ready(feed)
            return
        for source, entry in fetch.entries:
            feed.runners.put(Delivery(source, entry, None))
        if not fetch.drained:
            self._mark_ready(feed)

    async def _claim(self) -> None:
        """Own pending entries first (a restart with a stable consumer name), then entries
        idle in other consumers; each bounded by the subscription's room."""
        groups, consumer = self._groups, self.ctx.consumer
        for feed in [f for f in self._claims if f.runners.room > 0][:CLAIMS_PER_ROUND]:
            del self._claims[feed]
            runners, group = feed.runners, feed.runners.sub.group
            if feed.own:
                got, counts = await groups.claim_own(
                    feed.topic, group, consumer, runners.room, feed.own_after
                )
                if not got:
                    feed.own = False
                    self._probes[feed] = None  # now read what is new
            else:
                feed.idle_cursors, got = await groups.claim_idle(
                    feed.topic,
                    group,
                    consumer,
                    self.ctx.config.claim_idle_ms,
                    runners.room,
                    feed.idle_cursors,
                )
                got = [g for g in got if (group, g[0], g[1][0]) not in self.held]
                counts = await groups.delivery_counts(group, consumer, got) if got else {}
                feed.idle = bool(feed.idle_cursors)
            if feed.own or feed.idle:
                self._claims[feed] = None
            for source, entry in got:
                runners.put(Delivery(source, entry, counts.get(entry[0])))
