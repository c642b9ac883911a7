"""`relaybus dashboard` in a real browser: Debian's chromium, headless, driven by Playwright
(never a browser Playwright downloads), against the dashboard served in this process on a
free port of 127.0.0.1 and the test Redis. What a user sees and does: the topic list, a
message arriving live, replaying a dead letter, being refused without the admin token,
agents' text shown as text. Also the command itself: how it starts, stops and fails."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
import typer
from typer.testing import CliRunner

from relaybus import Bus, Message
from relaybus._cli_dashboard import register
from relaybus.dashboard import create_app, listen, serve
from relaybus.dashboard.app import shown_url
from relaybus.embedded import free_port

from .helpers import BINARIES, running, wait_for  # BINARIES: on the newest Redis line only (conftest)

assert BINARIES is not None
STRICT = os.environ.get("RELAYBUS_TEST_STRICT") == "1"
CHROMIUM = os.environ.get("RELAYBUS_CHROMIUM", "/usr/bin/chromium")
TOKEN = "test-admin-token-0123456789"
DOCS_IMG = Path(__file__).resolve().parents[1] / "docs" / "img"
# the docs' screenshots are retaken only when asked: a test run never edits the checkout
RETAKE = os.environ.get("RELAYBUS_DOCS_SCREENSHOTS") == "1"
LIVE_S = 8_000  # ms a live update may take in a test (the page polls every 1-2 s)


def _no_browser(reason: str) -> NoReturn:
    """As conftest's `_unavailable`: a failure in strict mode (CI), else a skip."""
    if STRICT:
        pytest.fail(f"RELAYBUS_TEST_STRICT=1 and no browser for the dashboard tests: {reason}")
    pytest.skip(f"no browser for the dashboard tests: {reason}")


# -- the dashboard, the browser, plain HTTP -------------------------------------------------


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def _post(url: str, body: bytes = b"{}", headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@contextlib.asynccontextmanager
async def dashboard(
    redis_url: str, prefix: str, token: str | None = TOKEN, bus: Bus | None = None, **options: Any
) -> AsyncIterator[str]:
    """The dashboard (over `bus`, else its own) served in this process on 127.0.0.1,
    whatever `host` it is told it has; yields its base URL."""
    port = free_port()
    app = create_app(bus or Bus.from_url(redis_url, prefix=prefix), token, **options)
    stop = asyncio.Event()
    server = asyncio.create_task(serve(app, listen("127.0.0.1", port), stop))
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while (await asyncio.to_thread(_get, f"{base}/api/overview"))[0] != 200:
        assert not server.done(), server.exception()
        assert time.monotonic() < deadline, "the dashboard did not start"
        await asyncio.sleep(0.1)
    try:
        yield base
    finally:
        stop.set()
        await asyncio.wait_for(server, 20)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        _no_browser("the playwright package is not installed (pip install -e '.[all]' --group test)")
    if not os.access(CHROMIUM, os.X_OK):
        _no_browser(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    """A page that accepts confirm dialogs (recording them) and fails the test on any
    script error (a CSP violation, a bug in dashboard.js)."""
    context = await browser.new_context(viewport={"width": 1280, "height": 860})
    tab = await context.new_page()
    errors: list[str] = []
    tab.dialogs = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)

    async def accept(dialog: Any) -> None:
        tab.dialogs.append(dialog.message)
        await dialog.accept()

    tab.on("dialog", accept)
    yield tab
    await context.close()
    assert not [e for e in errors if "403" not in e], errors  # a refused POST logs its 403: expected


def expect(locator: Any) -> Any:
    from playwright.async_api import expect as playwright_expect

    return playwright_expect(locator)


async def dead_letter(bus: Bus, topic: str, payload: Any, reason: str, group: str = "workers") -> Message:
    """A message of `topic` delivered to `group` and dead-lettered with `reason`."""
    sent = await bus.publish(topic, payload)
    delivered = await bus.read(topic, group, count=100)  # and any published before it: acked
    [message] = [m for m in delivered if m.id == sent]
    await bus.ack(*(m for m in delivered if m.id != sent))
    assert await bus.dead_letter(message, reason)
    return message


async def unchanged_state(bus: Bus, topic: str) -> tuple[Any, ...]:
    """What an admin action would change: the dead letters, and the topic's numbers
    (a replay lands in the group's retry stream: its lag)."""
    [stats] = (await bus.stats([topic])).topics
    dead = [(m.entry_id, m.id, m.headers) for m in await bus.dead_letters(topic)]
    return (dead, stats.length, stats.dlq_length, [(g.name, g.pending, g.lag) for g in stats.groups])


# -- what a user sees ---------------------------------------------------------------------


async def test_the_topic_list_shows_published_topics_live(
    redis_url: str, prefix: str, bus: Bus, page: Any
) -> None:
    await bus.publish_many("orders", [{"n": n} for n in range(3)])
    await bus.publish("agents.plan", {"step": "draft"})
    async with dashboard(redis_url, prefix) as base:
        await page.goto(f"{base}/")
        rows = page.locator("#topics tr")
        await expect(rows).to_have_count(2, timeout=LIVE_S)
        await expect(rows.filter(has_text="orders").locator("td").nth(1)).to_have_text("3")
        await expect(page.locator("#topics a", has_text="agents.plan")).to_have_attribute(
            "href", "/topics/agents.plan"
        )
        assert (
            await page.locator("header .where").text_content() == f"prefix {prefix} on {shown_url(redis_url)}"
        )

        await page.evaluate("window.notReloaded = true")
        await bus.publish("late.topic", {"hello": "world"})  # appears without a reload
        await expect(page.locator("#topics a", has_text="late.topic")).to_be_visible(timeout=LIVE_S)
        assert await page.evaluate("window.notReloaded") is True
        await expect(page.locator("#topics svg.spark")).to_have_count(3)
        await expect(page.locator("#status")).to_contain_text("live")


async def test_a_message_published_while_the_page_is_open_appears(
    redis_url: str, prefix: str, bus: Bus, page: Any
) -> None:
    await bus.publish("orders", {"n": "before"})
    async with dashboard(redis_url, prefix) as base:
        await page.goto(f"{base}/topics/orders")
        await expect(page.locator("#live")).to_have_text("live", timeout=LIVE_S)
        await expect(page.locator("#messages tr")).to_have_count(1)
        await page.evaluate("window.notReloaded = true")

        sent = await bus.publish(
            "orders", {"n": "while open", "note": "hello from an agent"}, headers={"sender-role": "planner"}
        )
        row = page.locator(f"#messages tr[data-id='{sent}']")
        await expect(row).to_contain_text("hello from an agent", timeout=LIVE_S)
        await expect(row).to_contain_text("sender-role=planner")
        await expect(page.locator("#messages tr").first).to_have_attribute("data-id", sent)  # newest first
        assert await page.evaluate("window.notReloaded") is True

        await page.fill("#filter", "planner")  # a filter on header values (and payloads)
        await expect(page.locator("#messages tr:visible")).to_have_count(1)
        await page.fill("#filter", "before")
        await expect(page.locator("#messages tr:visible")).to_contain_text('"n":"before"')
        await page.fill("#filter", "")
        await expect(page.locator("#messages tr:visible")).to_have_count(2)


async def test_a_replay_from_the_page_moves_the_dead_letter_back_and_it_is_handled(
    redis_url: str, prefix: str, bus: Bus, page: Any
) -> None:
    died = await dead_letter(bus, "jobs", {"job": 7}, "bad input")
    handled: list[Message] = []

    @bus.subscribe("jobs", group="workers")
    async def work(message: Message) -> None:
        handled.append(message)

    async with dashboard(redis_url, prefix) as base, running(bus):
        await page.goto(f"{base}/topics/jobs")
        row = page.locator(f"#dead-letters tr[data-id='{died.id}']")
        await expect(row).to_contain_text("bad input", timeout=LIVE_S)
        await expect(row).to_contain_text("group workers")
        await expect(page.locator("#groups tr")).to_contain_text("workers")
        await page.fill("#token", TOKEN)
        await row.locator("button.replay").click()
        await expect(page.locator("#action-result")).to_have_text("replayed 1 dead letter(s)")
        assert page.dialogs == [f"Replay dead letter {died.id} of jobs?"]
        await wait_for(lambda: bool(handled), 10)
        assert [(m.id, m.payload, m.attempt) for m in handled] == [(died.id, {"job": 7}, 1)]
        assert await bus.dead_letters("jobs") == []
        await expect(page.locator("#no-dead")).to_be_visible(timeout=LIVE_S)


async def test_without_the_token_replay_and_purge_do_nothing(
    redis_url: str, prefix: str, bus: Bus, page: Any
) -> None:
    died = await dead_letter(bus, "jobs", {"job": 1}, "bad input")
    before = await unchanged_state(bus, "jobs")
    async with dashboard(redis_url, prefix) as base:
        await page.goto(f"{base}/topics/jobs")
        row = page.locator(f"#dead-letters tr[data-id='{died.id}']")
        await expect(row).to_be_visible(timeout=LIVE_S)
        result = page.locator("#action-result")
        for token in ("", "not-the-token"):  # none in the field, then a wrong one
            await page.fill("#token", token)
            for button in (
                row.locator("button.replay"),
                page.locator("#replay-all"),
                page.locator("#purge-all"),
            ):
                await result.evaluate("node => { node.textContent = '' }")
                await button.click()  # the confirm dialog is accepted: the server refuses
                await expect(result).to_contain_text("refused (403)")
        assert len(page.dialogs) == 6 and "Delete all 1 dead letters of jobs?" in page.dialogs[2]
        await expect(row).to_be_visible()

        url = f"{base}/api/topics/jobs/dead-letters"
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": f"Basic {TOKEN}"},
            {"Authorization": f"Bearer {TOKEN}x"},
            {"Authorization": "Bearer "},
        ):
            for action in ("replay", "purge"):
                status, body = await asyncio.to_thread(_post, f"{url}/{action}", b"{}", headers)
                assert status == 403, (action, headers, body)
        assert await unchanged_state(bus, "jobs") == before

        admin = {"Authorization": f"Bearer {TOKEN}"}
        for bad in (b'{"ids": []}', b'{"ids": "x"}', b"[1]", b"not json"):  # never taken for "all"
            status, body = await asyncio.to_thread(_post, f"{url}/replay", bad, admin)
            assert status == 400, (bad, body)
        status, body = await asyncio.to_thread(_post, f"{url}/replay", b'{"ids": ["nope"]}', admin)
        assert status == 404, body
        assert await unchanged_state(bus, "jobs") == before

        status, body = await asyncio.to_thread(_post, f"{url}/purge", b"", admin)  # the right token
        assert (status, body) == (200, '{"purged":1}')


async def test_with_no_admin_token_configured_the_page_is_read_only(
    redis_url: str, prefix: str, bus: Bus, page: Any
) -> None:
    died = await dead_letter(bus, "jobs", {"job": 1}, "bad input")
    before = await unchanged_state(bus, "jobs")
    async with dashboard(redis_url, prefix, token=None) as base:
        await page.goto(f"{base}/topics/jobs")
        await expect(page.locator(f"#dead-letters tr[data-id='{died.id}']")).to_be_visible(timeout=LIVE_S)
        for button in ("#replay-all", "#purge-all", "#dead-letters button.replay"):
            await expect(page.locator(button)).to_be_disabled()
        await expect(page.locator("main")).to_contain_text("Replay and purge are off")
        for action in ("replay", "purge"):
            status, body = await asyncio.to_thread(
                _post, f"{base}/api/topics/jobs/dead-letters/{action}", b"{}", {"Authorization": "Bearer "}
            )
            assert status == 403 and "admin actions are off" in body
        assert await unchanged_state(bus, "jobs") == before


async def test_a_script_in_a_payload_renders_as_text(
    redis_url: str, prefix: str, bus: Bus, page: Any
) -> None:
    script = "<script>window.pwned = 'payload'</script>"
    image = "<img src=x onerror=\"window.pwned = 'img'\">"
    stored = await bus.publish("chat", {"text": script, "html": image}, headers={"note": "<b>bold</b>"})
    died = await dead_letter(bus, "chat", {"text": script}, "<script>window.pwned = 'reason'</script>")
    async with dashboard(redis_url, prefix) as base:
        await page.goto(f"{base}/topics/chat")
        await expect(page.locator("#live")).to_have_text("live", timeout=LIVE_S)
        live = await bus.publish("chat", {"text": script.replace("payload", "live")})  # over the stream
        for message_id in (stored, died.id, live):
            await expect(page.locator(f"tr[data-id='{message_id}']").first).to_contain_text(
                "<script>window.pwned", timeout=LIVE_S
            )
        text = await page.locator("main").text_content()
        assert script in text and "<b>bold</b>" in text and image.replace('"', '\\"') in text
        assert "<script>window.pwned = 'reason'</script>" in text
        await page.goto(f"{base}/find?id={stored}&topic=chat")  # the server-rendered page too
        await expect(page.locator("article.found pre.payload")).to_contain_text(script)
        await expect(page.locator("article.found")).to_contain_text("<b>bold</b>")
        assert await page.evaluate("typeof window.pwned") == "undefined"
        assert await page.locator("main script, main img, main b").count() == 0


async def test_a_message_is_found_by_id(redis_url: str, prefix: str, bus: Bus, page: Any) -> None:
    wanted = await bus.publish("orders", {"order": 42})
    await bus.publish("other", {"noise": True})
    died = await dead_letter(bus, "jobs", {"job": 1}, "bad input")
    async with dashboard(redis_url, prefix) as base:
        await page.goto(f"{base}/")
        await page.fill("header input[name=id]", wanted)
        await page.click("header button[type=submit]")
        await expect(page.locator("article.found h2")).to_contain_text("topic orders")
        await expect(page.locator("article.found pre.payload")).to_contain_text('"order": 42')
        await page.click("article.found h2 a")
        await expect(page).to_have_url(f"{base}/topics/orders")

        await page.goto(f"{base}/find?id={died.id}")  # dead letters too, every topic searched
        await expect(page.locator("article.found h2")).to_contain_text(
            ["topic jobs history", "topic jobs dead letters"]
        )
        await expect(page.locator("article.found").nth(1)).to_contain_text("x-dead-reasonbad input")
        await page.goto(f"{base}/find?id=01NOSUCHMESSAGE000000000000")
        await expect(page.locator("#result")).to_contain_text("No message with id")


async def test_screenshots_for_the_docs(
    redis_url: str, prefix: str, bus: Bus, page: Any, tmp_path: Path
) -> None:
    """dashboard.png (a topic page) and dashboard-topics.png (the topic list), for
    docs/dashboard.md: the dashboard as a user finds it, with agents at work. Taken into
    the test's own directory; into docs/img with RELAYBUS_DOCS_SCREENSHOTS=1."""
    shots = DOCS_IMG if RETAKE else tmp_path
    tasks = [
        ("billing", "review the refund flow"),
        ("auth", "check the token expiry"),
        ("search", "rank results by recency"),
        ("billing", "add an idempotency key"),
    ]
    for module, task in tasks:
        await bus.publish("reviews", {"module": module, "task": task}, headers={"sender-role": "planner"})
    [crashed, _] = await bus.read("reviews", "reviewers", consumer="reviewer-1", count=2)
    await bus.dead_letter(crashed, "failed 5 times (max_attempts)", ValueError("diff too large to review"))
    await bus.read("reviews", "auditors", count=1)
    await bus.publish_many("agents.plan", [{"step": n} for n in range(3)])
    async with dashboard(redis_url, prefix) as base:
        await page.goto(f"{base}/topics/reviews")
        await expect(page.locator("#live")).to_have_text("live", timeout=LIVE_S)
        await expect(page.locator("#messages tr")).to_have_count(len(tasks))
        await expect(page.locator("#dead-letters tr")).to_contain_text("diff too large", timeout=LIVE_S)
        await bus.publish(
            "reviews",
            {"module": "auth", "verdict": "approve", "notes": "expiry is checked"},
            headers={"sender-role": "reviewer"},
        )
        await expect(page.locator("#messages tr")).to_have_count(len(tasks) + 1, timeout=LIVE_S)
        await expect(page.locator("#summary")).to_contain_text("5 retained", timeout=LIVE_S)
        await page.locator("body").screenshot(path=str(shots / "dashboard.png"))

        await page.goto(f"{base}/")
        for n in range(30):  # traffic for the sparklines: a burst, a pause, a steadier rate
            await bus.publish("reviews" if n % 3 else "agents.plan", {"tick": n})
            await asyncio.sleep(0.05 if n < 12 else 0.25)
        await expect(page.locator("#topics tr")).to_have_count(2)
        await page.locator("body").screenshot(path=str(shots / "dashboard-topics.png"))
    assert (shots / "dashboard.png").stat().st_size > 10_000


# -- plain HTTP: the guard rails ------------------------------------------------------------


async def test_the_http_side_refuses_foreign_hosts_and_sets_security_headers(
    redis_url: str, prefix: str
) -> None:
    async with dashboard(redis_url, prefix) as base:
        status, headers, _ = await asyncio.to_thread(_get, f"{base}/", {"Host": "evil.example"})
        assert status == 400  # DNS rebinding: a page of another site cannot read the dashboard
        status, headers, body = await asyncio.to_thread(_get, f"{base}/")
        assert status == 200 and "<h1>Topics</h1>" in body
        assert "script-src 'self'" in headers["content-security-policy"]
        assert headers["x-frame-options"] == "DENY"
        assert (await asyncio.to_thread(_get, f"{base}/topics/no-such-topic"))[0] == 404
        assert (await asyncio.to_thread(_get, f"{base}/api/topics/bad%20topic"))[0] == 400


SPELLINGS = ["127.1", "0x7f000001", "[::ffff:127.0.0.1]", "127.0.0.2", "2130706433", "localhost.", "[::1]"]


@pytest.mark.parametrize("bound", ["127.0.0.1", "127.1", "0x7f000001", "::ffff:127.0.0.1", "0.0.0.0"])
async def test_the_host_check_is_an_allow_list_of_exact_names(
    redis_url: str, prefix: str, bound: str
) -> None:
    """Whatever spelling of an address the dashboard is bound to, it answers its own name,
    the loopback names and the configured ones - never another name nor another spelling
    of loopback (a DNS-rebinding page names its own host)."""
    async with dashboard(redis_url, prefix, host=bound, allowed_hosts=["dash.internal"]) as base:
        port = base.rsplit(":", 1)[1]

        def status(host: str) -> int:
            return _get(f"{base}/api/overview", {"Host": f"{host}:{port}"})[0]

        own = [] if bound == "0.0.0.0" else [f"[{bound}]" if ":" in bound else bound]
        for host in ["localhost", "127.0.0.1", "[::1]", "dash.internal", "DASH.internal", *own]:
            assert await asyncio.to_thread(status, host) == 200, host
        for host in ["attacker.example", "0.0.0.0", *(s for s in SPELLINGS if s not in own and s != "[::1]")]:
            assert await asyncio.to_thread(status, host) == 400, host


async def test_pages_of_other_sites_cannot_make_it_work(redis_url: str, prefix: str, bus: Bus) -> None:
    """A request another site's page makes the browser send (Sec-Fetch-Site, Origin) is
    refused before it does anything, even with the admin token; the dashboard's own
    requests, the address bar and clients that send neither header are served."""
    await dead_letter(bus, "jobs", {"job": 1}, "bad input")
    async with dashboard(redis_url, prefix) as base:
        own = base.replace("http://", "")
        replay = f"{base}/api/topics/jobs/dead-letters/replay"
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        for headers in (
            {"Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "same-site"},
            {"Origin": "http://attacker.example"},
            {"Origin": "null"},
            {"Origin": f"http://localhost:{own.split(':')[1]}"},
        ):
            assert (await asyncio.to_thread(_get, f"{base}/find?id=x&topic=jobs", headers))[0] == 403, headers
            assert (await asyncio.to_thread(_post, replay, b"{}", {**bearer, **headers}))[0] == 403, headers
        assert (await bus.stats(["jobs"])).topics[0].dlq_length == 1  # nothing replayed
        for headers in ({}, {"Sec-Fetch-Site": "none"}, {"Sec-Fetch-Site": "same-origin"}):
            assert (await asyncio.to_thread(_get, f"{base}/find?id=x&topic=jobs", headers))[0] == 200
        assert (
            await asyncio.to_thread(
                _post, replay, b"{}", {**bearer, "Origin": base, "Sec-Fetch-Site": "same-origin"}
            )
        )[0] == 200


def watched_bus(redis_url: str, prefix: str, loaded: list[int], in_flight: list[int]) -> Bus:
    """A Bus that counts the entries its history() and dead_letters() return, and the most
    of those calls in flight at once (`in_flight`: now, most)."""
    bus = Bus.from_url(redis_url, prefix=prefix)

    def counted(method: Any) -> Any:
        async def wrapper(topic: str, limit: int = 100) -> list[Message]:
            in_flight[0] += 1
            in_flight[1] = max(in_flight)
            try:
                got: list[Message] = await method(topic, limit)
            finally:
                in_flight[0] -= 1
            loaded.append(len(got))
            return got

        return wrapper

    bus.history = counted(bus.history)  # type: ignore[method-assign]
    bus.dead_letters = counted(bus.dead_letters)  # type: ignore[method-assign]
    return bus


@contextlib.contextmanager
def another_site(body: str) -> Iterator[int]:
    """A web server on another port of 127.0.0.1 serving `body` as its page; yields the port.
    Real, not a Playwright route: Chromium then sees it in the loopback address space, so
    its requests to the dashboard are not blocked by the browser itself."""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: Any) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield server.server_address[1]
        finally:
            server.shutdown()


async def test_a_page_of_another_origin_makes_it_load_nothing(
    redis_url: str, prefix: str, bus: Bus, page: Any
) -> None:
    """In the browser: a page of another port of this host (same-site) and one of another
    site (localhost) send no-cors fetches and images at /find - none of them is served."""
    await bus.publish_many("big", [{"n": n} for n in range(500)])
    loaded: list[int] = []
    async with dashboard(redis_url, prefix, bus=watched_bus(redis_url, prefix, loaded, [0, 0])) as base:
        target = f"{base}/find?id=x&topic=big"
        attack = (
            f"<script>fetch('{target}', {{mode: 'no-cors'}}); new Image().src = '{target}&img';"
            "document.title = 'sent'</script>"
        )
        with another_site(attack) as port:
            for origin in (f"http://127.0.0.1:{port}", f"http://localhost:{port}"):
                await page.goto(f"{origin}/")
                await expect(page).to_have_title("sent")
                await asyncio.sleep(1)
        assert loaded == []
        await page.goto(target)  # the dashboard's own search still works
        await expect(page.locator("#result")).to_contain_text("No message with id")
    assert sum(loaded) == 500


async def test_a_search_loads_a_bounded_number_of_entries(redis_url: str, prefix: str, bus: Bus) -> None:
    """Entries read per GET /find are bounded (counted as the Bus returns them), with a
    topic and without, and concurrent searches run one at a time."""
    await bus.publish_many("big", [{"n": n} for n in range(3_000)])
    for n in range(25):
        await bus.publish(f"t{n:02}", {"n": n})
    loaded: list[int] = []
    running_now = [0, 0]  # searches in flight, the most seen
    async with dashboard(redis_url, prefix, bus=watched_bus(redis_url, prefix, loaded, running_now)) as base:
        for query in ("id=x&topic=big", "id=x"):
            loaded.clear()
            status, _, body = await asyncio.to_thread(_get, f"{base}/find?{query}")
            assert status == 200 and "No message with id" in body
            assert 0 < sum(loaded) <= 2_000, (query, sum(loaded))
        assert "each of the first 10 of 26 topics" in body
        loaded.clear()
        results = await asyncio.gather(
            *(asyncio.to_thread(_get, f"{base}/find?id=x&topic=big") for _ in range(6))
        )
    assert [r[0] for r in results] == [200] * 6 and sum(loaded) <= 6 * 2_000
    assert running_now[1] == 1


def test_the_redis_url_is_shown_without_secrets() -> None:
    assert shown_url("redis://app:hunter2@redis.internal:6380/2") == "redis://app:***@redis.internal:6380/2"
    assert "hunter2" not in shown_url("rediss://redis.internal:6380/0?password=hunter2")
    assert shown_url("redis://localhost:6379/0") == "redis://localhost:6379/0"


# -- the command ----------------------------------------------------------------------------


def _cli() -> typer.Typer:
    """The CLI as cli.py wires it: `register` adds `dashboard`."""
    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    return app


COMMAND = [
    sys.executable,
    "-c",
    "import typer; from relaybus._cli_dashboard import register; "
    "app = typer.Typer(); app.callback()(lambda: None); register(app); app(prog_name='relaybus')",
]


def test_the_command_serves_until_ctrl_c(redis_url: str, prefix: str) -> None:
    port = free_port()
    with subprocess.Popen(
        [
            *COMMAND,
            "dashboard",
            "--redis-url",
            redis_url,
            "--prefix",
            prefix,
            "--port",
            str(port),
            "--allowed-host",
            "dash.internal",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            first = process.stdout.readline()
            assert f"relaybus dashboard on http://127.0.0.1:{port}/" in first, first
            assert f"prefix {prefix!r}" in first and "replay and purge are off" in first
            status, _, body = _get(f"http://127.0.0.1:{port}/")
            assert status == 200 and "Topics" in body
            assert _get(f"http://127.0.0.1:{port}/", {"Host": "dash.internal"})[0] == 200
            assert _get(f"http://127.0.0.1:{port}/", {"Host": "dash.internal.attacker.example"})[0] == 400
            process.send_signal(signal.SIGINT)
            _, stderr = process.communicate(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 0, stderr
    assert stderr.strip().endswith("dashboard stopped") and "Traceback" not in stderr


def test_unreachable_redis_is_one_line() -> None:
    result = CliRunner().invoke(
        _cli(), ["dashboard", "--redis-url", "redis://127.0.0.1:1/0", "--port", str(free_port())]
    )
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: cannot reach Redis") and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_port_in_use_is_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(_cli(), ["dashboard", "--port", str(port)])
    assert result.exit_code == 1, result.output
    assert result.output.strip() == f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
