"""Each hook's contract against a real Redis, with throwaway plugins."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import redis
from pydantic import BaseModel, Field

from relaybus import Bus, ConfigError, FailureDecision, Message, PluginError, Reject, Subscription, hookimpl

from .helpers import run_until, running


async def test_on_publish_may_change_the_message(bus: Bus) -> None:
    class Stamp:
        @hookimpl
        def on_publish(self, message: Message) -> Message:
            return message.model_copy(update={"headers": {**message.headers, "stamped": "yes"}})

    bus.plugins.register(Stamp(), "stamp")
    await bus.publish_many("stamped", [1, 2])
    assert [m.headers for m in await bus.history("stamped")] == [{"stamped": "yes"}] * 2


async def test_on_publish_raising_rejects_and_writes_nothing(bus: Bus) -> None:
    class Gate:
        @hookimpl
        async def on_publish(self, message: Message) -> None:
            if message.payload == "bad":
                raise ValueError("not allowed")

    bus.plugins.register(Gate(), "gate")
    with pytest.raises(PluginError, match="'gate' failed in on_publish: ValueError: not allowed"):
        await bus.publish_many("gated", ["ok", "bad"])
    assert await bus.history("gated") == []


class StampSettings(BaseModel):
    stamp_text: str = Field("default-stamp", min_length=1)


class SettingStamp:
    """A plugin with a setting, registered by hand (not through an entry point)."""

    @hookimpl
    def plugin_settings(self) -> type[BaseModel]:
        return StampSettings

    @hookimpl
    def on_publish(self, bus: Bus, message: Message) -> Message:
        stamp = bus.config.settings(StampSettings).stamp_text
        return message.model_copy(update={"headers": {**message.headers, "stamp": stamp}})


@pytest.mark.parametrize(("env", "expected"), [(None, "default-stamp"), ("from-env", "from-env")])
async def test_plugin_settings_of_a_plugin_registered_by_hand_come_from_env_and_defaults(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch, env: str | None, expected: str
) -> None:
    """Installed plugins' settings are known when the config is built; one registered by
    hand afterwards gets its settings from RELAYBUS_<NAME> and its model's defaults."""
    if env is not None:
        monkeypatch.setenv("RELAYBUS_STAMP_TEXT", env)
    async with Bus.from_url(redis_url, prefix=prefix) as bus:
        bus.plugins.register(SettingStamp(), "setting-stamp")
        await bus.publish("stamped.settings", 1)
        assert [m.headers for m in await bus.history("stamped.settings")] == [{"stamp": expected}]
        assert bus.config.stamp_text == expected  # read back as a config attribute too
    with pytest.raises(ConfigError, match="unknown setting 'stamp_text'"):  # not installed: unknown
        Bus.from_url(redis_url, prefix=prefix, stamp_text="x")


class CostOptions(BaseModel):
    max_cost: int = Field(10, ge=0)


class CostCap:
    def __init__(self) -> None:
        self.seen: list[dict[str, object]] = []
        self.typed: list[CostOptions] = []

    @hookimpl
    def subscription_options(self) -> type[BaseModel]:
        return CostOptions

    @hookimpl
    def on_subscribe(self, subscription: Subscription) -> None:
        self.seen.append(subscription.options)
        self.typed.append(subscription.option(CostOptions))


async def test_subscription_options_are_declared_validated_and_typos_refused(bus: Bus) -> None:
    """subscribe's extra keywords are those plugins declare: validated, defaults filled
    in for on_subscribe; a typo is a TypeError, an invalid value a ConfigError, and
    both are refused before the handler is registered."""
    plugin = CostCap()
    bus.plugins.register(plugin, "cost-cap")

    async def handler(msg: Message) -> None: ...

    bus.subscribe("costly", group="g", max_cost=3)(handler)
    bus.subscribe("costly", group="h")(handler)
    assert plugin.seen == [{"max_cost": 3}, {"max_cost": 10}]
    assert plugin.typed == [CostOptions(max_cost=3), CostOptions(max_cost=10)]  # option(Model): typed
    assert [s.option(CostOptions) for s in bus.subscriptions] == plugin.typed  # kept, same instance
    assert bus.subscriptions[0].option(CostOptions) is plugin.typed[0]
    with pytest.raises(TypeError, match=r"unknown option 'max_cots' \(did you mean 'max_cost'\?\)"):
        bus.subscribe("costly", group="g", max_cots=3)
    with pytest.raises(ConfigError, match="max_cost: Input should be greater than or equal to 0"):
        bus.subscribe("costly", group="g", max_cost=-1)
    assert len(bus.subscriptions) == 2
    bus.plugins.unregister("cost-cap")
    with pytest.raises(TypeError, match="unknown option 'max_cost'"):  # nobody declares it now
        bus.subscribe("costly", group="g", max_cost=3)


async def test_a_subscription_option_named_like_a_subscribe_keyword_is_refused(bus: Bus) -> None:
    class Grabby:
        @hookimpl
        def subscription_options(self) -> type[BaseModel]:
            return type("GrabbyOptions", (BaseModel,), {"__annotations__": {"group": str}, "group": "x"})

    bus.plugins.register(Grabby(), "grabby")
    with pytest.raises(ConfigError, match="plugin 'grabby' declares the subscribe option 'group'"):
        bus.subscribe("t", group="g")


class Around:
    """Wraps each handler: records what happened inside it, in order."""

    def __init__(self) -> None:
        self.log: list[str] = []

    @hookimpl
    def handler_context(self, message: Message, subscription: Subscription) -> Any:
        around = self

        class Context:
            def __enter__(self) -> None:
                around.log.append(f"enter {message.payload}")

            def __exit__(self, *exc: object) -> None:
                around.log.append(f"exit {message.payload}")

        return Context()

    @hookimpl
    def on_failure(self, message: Message) -> None:
        self.log.append(f"on_failure {message.payload}")

    @hookimpl
    def on_settled(self, message: Message, outcome: str) -> None:
        self.log.append(f"{outcome} {message.payload}")


async def test_handler_context_wraps_the_handler_and_the_settling(bus: Bus) -> None:
    around = Around()
    bus.plugins.register(around, "around")

    @bus.subscribe("wrapped", group="g")
    def handle(msg: Message) -> None:  # a plain function: in a worker thread, still inside
        around.log.append(f"handler {msg.payload}")
        if msg.payload == "bad":
            raise Reject("no")

    await bus.publish_many("wrapped", ["ok", "bad"])
    await run_until(bus, lambda: len(around.log) == 8)
    assert around.log == [
        "enter ok",
        "handler ok",
        "handled ok",
        "exit ok",
        "enter bad",
        "handler bad",
        "dead_lettered bad",
        "exit bad",
    ]


async def test_filter_false_acks_and_counts(bus: Bus, raw: redis.Redis) -> None:
    class EvenOnly:
        @hookimpl(specname="filter")
        def filter_message(self, message: Message, subscription: Subscription) -> bool:
            return message.payload % 2 == 0

    bus.plugins.register(EvenOnly(), "even")
    await bus.publish_many("numbers", list(range(6)))
    seen: list[int] = []

    @bus.subscribe("numbers", group="g")
    async def handle(msg: Message) -> None:
        seen.append(msg.payload)

    await run_until(bus, lambda: len(seen) == 3 and bus.counters["filtered"] == 3)
    assert seen == [0, 2, 4]
    assert raw.hget(bus.keys.counters("numbers"), "filtered") == b"3"
    assert raw.xpending(bus.keys.stream("numbers"), "g")["pending"] == 0


class Decide:
    """Answers on_failure with a fixed decision and records dead letters."""

    def __init__(self, decision: FailureDecision) -> None:
        self.decision = decision
        self.dead: list[tuple[str, str]] = []

    @hookimpl
    def on_failure(self, message: Message, error: BaseException) -> FailureDecision:
        return self.decision

    @hookimpl
    def on_dead_letter(self, message: Message, reason: str) -> None:
        self.dead.append((message.id, reason))


async def test_retry_decision_redelivers_to_that_group_only(bare_bus: Bus) -> None:
    bare_bus.plugins.register(Decide(FailureDecision.retry(0.2)), "decide")
    mid = await bare_bus.publish("retry.me", {"x": 1})
    attempts: list[int] = []
    other: list[str] = []

    @bare_bus.subscribe("retry.me", group="flaky")
    async def flaky(msg: Message) -> None:
        attempts.append(msg.attempt)
        if msg.attempt == 1:
            raise RuntimeError("transient")

    @bare_bus.subscribe("retry.me", group="steady")
    async def steady(msg: Message) -> None:
        other.append(msg.id)

    await run_until(bare_bus, lambda: attempts == [1, 2])
    await asyncio.sleep(0.3)
    assert other == [mid]  # the other group of the fan-out saw it once


async def test_dead_letter_decision_moves_atomically(bare_bus: Bus, raw: redis.Redis) -> None:
    decide = Decide(FailureDecision.dead_letter("gave up"))
    bare_bus.plugins.register(decide, "decide")
    mid = await bare_bus.publish("doomed", {"x": 1})

    @bare_bus.subscribe("doomed", group="g")
    async def handle(msg: Message) -> None:
        raise RuntimeError("always")

    await run_until(bare_bus, lambda: decide.dead == [(mid, "gave up")])
    assert raw.xpending(bare_bus.keys.stream("doomed"), "g")["pending"] == 0
    assert raw.xlen(bare_bus.keys.dlq("doomed")) == 1
    [dead] = await bare_bus.dead_letters("doomed")
    assert dead.id == mid and dead.payload == {"x": 1}
    assert dead.headers["x-dead-reason"] == "gave up"
    assert dead.headers["x-dead-error-type"] == "RuntimeError"
    assert dead.headers["x-dead-group"] == "g"


async def test_reject_goes_straight_to_the_dlq_and_replay_brings_it_back(bus: Bus) -> None:
    mid = await bus.publish("rejecting", {"x": 1})
    calls: list[int] = []

    @bus.subscribe("rejecting", group="g")
    async def handle(msg: Message) -> None:
        calls.append(msg.attempt)
        if len(calls) == 1:
            raise Reject("cannot ever work")

    async with running(bus):
        for _ in range(100):
            if await bus.dead_letters("rejecting"):
                break
            await asyncio.sleep(0.05)
        [dead] = await bus.dead_letters("rejecting")
        assert dead.headers["x-dead-reason"] == "rejected" and calls == [1]
        assert await bus.replay_dead_letters("rejecting") == 1
        assert await bus.dead_letters("rejecting") == []
        for _ in range(100):
            if len(calls) == 2:
                break
            await asyncio.sleep(0.05)
    assert calls == [1, 1]  # replayed with a fresh attempt count
    assert [m.id for m in await bus.history("rejecting")] == [mid]


async def test_drop_decision_acks_and_counts(bare_bus: Bus, raw: redis.Redis) -> None:
    bare_bus.plugins.register(Decide(FailureDecision.drop("not worth it")), "decide")
    await bare_bus.publish("dropping", 1)
    calls: list[int] = []

    @bare_bus.subscribe("dropping", group="g")
    async def handle(msg: Message) -> None:
        calls.append(1)
        raise RuntimeError("x")

    await run_until(bare_bus, lambda: bare_bus.counters["dropped"] == 1)
    assert calls == [1]
    assert raw.xpending(bare_bus.keys.stream("dropping"), "g")["pending"] == 0
    assert raw.xlen(bare_bus.keys.dlq("dropping")) == 0


async def test_purge_dead_letters(bus: Bus, raw: redis.Redis) -> None:
    raw.xadd(bus.keys.stream("purged"), {"junk": "1"})
    await bus.read("purged", group="g")  # the junk entry is set aside
    assert len(await bus.dead_letters("purged")) == 1
    assert await bus.purge_dead_letters("purged") == 1
    assert await bus.dead_letters("purged") == []


async def test_on_cleanup_runs_on_cleanup_call(bus: Bus) -> None:
    calls: list[Bus] = []

    class Cleaner:
        @hookimpl
        async def on_cleanup(self, bus: Bus) -> None:
            calls.append(bus)

    bus.plugins.register(Cleaner(), "cleaner")
    await bus.cleanup()
    assert calls == [bus]


async def test_on_published_sees_ids_and_duplicates(bus: Bus) -> None:
    seen: list[tuple[str, list[str], list[str]]] = []

    class Watch:
        @hookimpl
        def on_published(self, topic: str, messages: list[Message], ids: list[str]) -> None:
            seen.append((topic, [m.id for m in messages], ids))

    bus.plugins.register(Watch(), "watch")
    first = await bus.publish("obs", 1, dedup_key="k")
    await bus.publish("obs", 2, dedup_key="k")  # a duplicate: nothing appended
    [(_, ids1, got1), (_, ids2, got2)] = seen
    assert got1 == ids1 == [first]
    assert got2 == [first] and ids2 != [first]


async def test_on_settled_reports_each_outcome(bus: Bus) -> None:
    outcomes: list[tuple[object, str, bool]] = []

    class Watch:
        @hookimpl
        async def on_settled(self, message: Message, outcome: str, duration_s: float | None) -> None:
            outcomes.append((message.payload, outcome, duration_s is not None))

        @hookimpl(specname="filter")
        def filter_message(self, message: Message) -> bool:
            return message.payload != "skip"

    class Broken:
        @hookimpl
        def on_settled(self) -> None:
            raise RuntimeError("observer bug")  # logged; delivery carries on

    bus.plugins.register(Watch(), "watch")
    bus.plugins.register(Broken(), "broken")
    await bus.publish("o", "stale", ttl=0.05)
    await asyncio.sleep(0.1)
    for payload in ("ok", "skip", "boom"):
        await bus.publish("o", payload)

    @bus.subscribe("o", group="g")
    async def handle(msg: Message) -> None:
        if msg.payload == "boom":
            raise ValueError("boom")

    await run_until(bus, lambda: len(outcomes) == 4)
    assert sorted(outcomes, key=str) == sorted(
        [
            ("stale", "expired", False),
            ("ok", "handled", True),
            ("skip", "filtered", False),
            ("boom", "retried", True),
        ],
        key=str,
    )


async def test_on_settled_for_pull_reads_when_acked(bus: Bus) -> None:
    settled: list[tuple[object, str, object]] = []

    class Watch:
        @hookimpl
        def on_settled(self, message: Message, subscription: Subscription | None, outcome: str) -> None:
            settled.append((message.payload, outcome, subscription))

    bus.plugins.register(Watch(), "watch")
    await bus.publish_many("pull", [1, 2])
    got = await bus.read("pull", group="g", count=2)
    assert settled == []  # read alone settles nothing
    await bus.ack(*got)
    assert settled == [(1, "handled", None), (2, "handled", None)]


class BrokenObservers:
    """Every observer hook raises (one plugin's error must not switch off another's duty)."""

    @hookimpl
    def on_published(self) -> None:
        raise RuntimeError("on_published broke")

    @hookimpl
    def on_dead_letter(self) -> None:
        raise RuntimeError("on_dead_letter broke")

    @hookimpl
    async def on_settled(self) -> None:
        raise RuntimeError("on_settled broke")


async def test_a_raising_observer_is_logged_and_settling_goes_on(
    bus: Bus, raw: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """on_dead_letter raising (in a run handler's dead-lettering and a pull's bus.dead_letter)
    is logged naming the plugin; the message is dead-lettered, said so, and another
    plugin's on_settled fires once with the real outcome."""
    settled: list[tuple[object, str]] = []

    class Watch:
        @hookimpl
        def on_settled(self, message: Message, outcome: str) -> None:
            settled.append((message.payload, outcome))

    bus.plugins.register(Watch(), "watch")
    bus.plugins.register(BrokenObservers(), "broken")
    await bus.publish("observed", "rejected")

    @bus.subscribe("observed", group="g")
    async def handle(msg: Message) -> None:
        raise Reject("never")

    with caplog.at_level(logging.INFO, logger="relaybus"):
        await run_until(bus, lambda: len(settled) == 1)
        await asyncio.sleep(0.2)  # nothing more comes
        await bus.publish("pulled", "bad")
        [pulled] = await bus.read("pulled", group="g")
        assert await bus.dead_letter(pulled, "bad input") is True
    assert settled == [("rejected", "dead_lettered"), ("bad", "dead_lettered")]
    assert raw.xlen(bus.keys.dlq("observed")) == raw.xlen(bus.keys.dlq("pulled")) == 1
    assert raw.xpending(bus.keys.stream("observed"), "g")["pending"] == 0
    failed = {r.getMessage() for r in caplog.records if "observer hook" in r.getMessage()}
    assert failed == {
        f"relaybus observer hook {hook} of plugin 'broken' failed"
        for hook in ("on_published", "on_dead_letter", "on_settled")
    }
    assert "stays pending" not in caplog.text


class WithBus:
    """filter, handler_context and on_dead_letter as written since they gained `bus`."""

    def __init__(self) -> None:
        self.buses: list[tuple[str, object]] = []

    @hookimpl(specname="filter")
    def keep(self, bus: Bus, message: Message) -> bool:
        self.buses.append(("filter", bus))
        return True

    @hookimpl
    def handler_context(self, bus: Bus, message: Message) -> None:
        self.buses.append(("handler_context", bus))

    @hookimpl
    def on_dead_letter(self, bus: Bus, message: Message, reason: str) -> None:
        self.buses.append((f"on_dead_letter {reason}", bus))


async def test_per_message_hooks_get_the_bus_and_older_ones_still_work(bus: Bus) -> None:
    """The new `bus` argument reaches filter, handler_context and on_dead_letter, while a
    plugin written before it (Around, Decide: no `bus`) runs beside it unchanged."""
    with_bus, around = WithBus(), Around()
    bus.plugins.register(with_bus, "with-bus")
    bus.plugins.register(around, "around")

    @bus.subscribe("carried", group="g")
    async def handle(msg: Message) -> None:
        raise Reject("no")

    await bus.publish("carried", "one")
    await run_until(bus, lambda: len(around.log) == 3)
    assert around.log == ["enter one", "dead_lettered one", "exit one"]
    assert with_bus.buses == [("filter", bus), ("handler_context", bus), ("on_dead_letter rejected", bus)]


class BrokenDeadLetter:
    """on_dead_letter raises, naming `bus` (the new argument) or not."""

    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def on_dead_letter(self, bus: Bus, message: Message) -> None:
        self.calls += 1
        raise RuntimeError("on_dead_letter broke")


async def test_on_dead_letter_is_an_observer_on_every_road(
    redis_url: str, prefix: str, raw: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """However a message reaches the DLQ - Reject, an on_failure decision (dlq's
    max_attempts), expiry, a pull's bus.dead_letter - a raising on_dead_letter is logged
    as the observer it is declared to be: the message is dead-lettered and acked,
    on_settled fires once with the real outcome, and nothing says it stays pending."""
    settled: list[tuple[object, str]] = []

    class Watch:
        @hookimpl
        def on_settled(self, message: Message, outcome: str) -> None:
            settled.append((message.payload, outcome))

    broken = BrokenDeadLetter()
    async with Bus.from_url(
        redis_url, prefix=prefix, block_ms=100, claim_idle_ms=1000, max_attempts=1, dead_letter_expired=True
    ) as bus:
        bus.plugins.register(Watch(), "watch")
        bus.plugins.register(broken, "broken")
        await bus.publish("roads", "rejected")
        await bus.publish("roads", "failed")
        await bus.publish("roads", "expired", ttl=0.05)
        await asyncio.sleep(0.1)

        @bus.subscribe("roads", group="g")
        async def handle(msg: Message) -> None:
            if msg.payload == "rejected":
                raise Reject("never")
            raise RuntimeError("handler broke")

        with caplog.at_level(logging.INFO, logger="relaybus"):
            await run_until(bus, lambda: len(settled) == 3)
            await asyncio.sleep(0.2)  # nothing more comes
            await bus.publish("pulled", "bad")
            [pulled] = await bus.read("pulled", group="g")
            assert await bus.dead_letter(pulled, "bad input") is True
        assert sorted(settled, key=str) == sorted(
            [
                ("rejected", "dead_lettered"),
                ("failed", "dead_lettered"),
                ("expired", "expired"),
                ("bad", "dead_lettered"),
            ],
            key=str,
        )
        assert raw.xlen(bus.keys.dlq("roads")) == 3 and raw.xlen(bus.keys.dlq("pulled")) == 1
        assert raw.xpending(bus.keys.stream("roads"), "g")["pending"] == 0
        assert raw.xpending(bus.keys.stream("pulled"), "g")["pending"] == 0
    assert broken.calls == 4
    failed = [
        r for r in caplog.records if "observer hook on_dead_letter of plugin 'broken'" in r.getMessage()
    ]
    assert len(failed) == 4 and all(r.exc_info is not None for r in failed)
    assert "stays pending" not in caplog.text
