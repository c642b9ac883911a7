"""`relaybus demo`: a planner hands review tasks to two reviewers sharing a group; a
monitor follows the results. One review crashes once to show a retry."""

from __future__ import annotations

import asyncio
import random
import time

from rich.console import Console

from .bus import Bus
from .message import Message

TASKS = ["parser", "scheduler", "auth", "billing", "search", "cache"]


async def run_demo(url: str, prefix: str, console: Console, claim_idle_ms: int = 1500) -> int:
    """Returns how many reviews the monitor saw; every task is reviewed exactly once."""
    options = {"prefix": prefix, "claim_idle_ms": claim_idle_ms, "retry_backoff_s": 0.5}
    planner = Bus.from_url(url, consumer_name="planner", **options)
    reviewers = [Bus.from_url(url, consumer_name=f"reviewer-{n}", **options) for n in (1, 2)]
    monitor = Bus.from_url(url, consumer_name="monitor", **options)
    done: dict[str, str] = {}
    all_done = asyncio.Event()
    crashed: set[str] = set()  # reviews that crashed, each shown as it happened
    finished_on: dict[str, int] = {}  # module -> the attempt its review finished on

    for bus in reviewers:

        @bus.subscribe("tasks.review", group="reviewers", concurrency=2)
        async def review(msg: Message, bus: Bus = bus) -> None:
            module = msg.payload["module"]
            console.print(f"  [cyan]{bus.consumer}[/] reviews [bold]{module}[/] (attempt {msg.attempt})")
            await asyncio.sleep(random.uniform(0.1, 0.4))
            if module == "billing" and module not in crashed:
                crashed.add(module)
                console.print(
                    f"  [red]{bus.consumer} crashed[/] reviewing [bold]{module}[/] (lost its "
                    f"LLM connection); the bus retries it after a backoff"
                )
                raise RuntimeError("reviewer lost its LLM connection")
            finished_on[module] = msg.attempt
            verdict = random.choice(["approve", "request changes"])
            await bus.publish(
                "reviews.done",
                {"module": module, "verdict": verdict, "by": bus.consumer},
                correlation_id=msg.id,
            )

    @monitor.subscribe("reviews.*", group="monitor")
    async def follow(msg: Message) -> None:
        done[msg.payload["module"]] = msg.payload["verdict"]
        console.print(
            f"[green]monitor[/]: {msg.payload['module']} -> {msg.payload['verdict']} (by {msg.payload['by']})"
        )
        if len(done) == len(TASKS):
            all_done.set()

    async with planner, reviewers[0], reviewers[1], monitor:
        started = time.monotonic()
        workers = [asyncio.create_task(b.run()) for b in (*reviewers, monitor)]
        ids = await planner.publish_many("tasks.review", [{"module": m} for m in TASKS], sender="planner")
        console.print(f"[magenta]planner[/] published {len(ids)} review tasks to tasks.review")
        try:
            await asyncio.wait_for(all_done.wait(), timeout=45)
        finally:
            await asyncio.gather(*(b.stop() for b in (*reviewers, monitor)))
            await asyncio.gather(*workers, return_exceptions=True)
        console.print(closing(len(done), time.monotonic() - started, crashed, finished_on))
    return len(done)


def closing(reviewed: int, seconds: float, crashed: set[str], finished_on: dict[str, int]) -> str:
    """The last line: what the run did - a crash only if one was shown, and how it ended."""
    line = "[bold]" + (f"all {reviewed}" if reviewed == len(TASKS) else f"{reviewed} of {len(TASKS)}")
    line += f" tasks reviewed in {seconds:.1f}s"
    for module in sorted(crashed):
        if module in finished_on:
            line += (
                f"; the review of {module} that crashed was retried after a backoff and "
                f"finished on attempt {finished_on[module]}"
            )
        else:
            line += f"; the review of {module} that crashed did not finish"
    return line + "[/]"
