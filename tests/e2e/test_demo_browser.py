"""The demo page in a real headless Chromium (Debian's ``chromium``, driven by Playwright)
against the e2e stack: nginx, three replicas, Redis.

Keyboard only: log in, ask, watch both answers stream with their replica names, vote, chat
between two pages; then a rolling restart of the whole stack while two long answers stream:
both continue on other replicas with every token exactly once.  No page logs a console error.
The screenshots in docs/screenshots/ (desktop and 375 px phone width) come from this test:
``ARENA_UPDATE_SCREENSHOTS=1 python -m pytest tests/e2e/test_demo_browser.py`` rewrites them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Stack
from tests.e2e.helpers import EXAMPLE, ROOT, get_json, stack_env

pytestmark = pytest.mark.e2e

#: The README's screenshots; rewritten only with ARENA_UPDATE_SCREENSHOTS=1 (otherwise they go
#: to the test's temporary directory, so a test run leaves the working tree as it was).
SCREENSHOTS = ROOT / "docs" / "screenshots"
REPLICA = re.compile(r"^web-\d+$")
PROMPT = "How does a load balancer keep a stream alive?"
#: Milliseconds Playwright waits for one expectation (a stream of 60 tokens takes about 3 s).
WAIT_MS = 20_000


def voice_tokens(model: str, prompt: str, count: int) -> list[str]:
    """The answer every replica streams for (model, prompt): the example's own function."""
    sys.path.insert(0, str(EXAMPLE))
    try:
        from arena.llm import Voice
    finally:
        sys.path.remove(str(EXAMPLE))
    voice = Voice(model, prompt)
    return [voice.token(i) for i in range(count)]


@pytest.fixture(scope="module")
def site(stack: Stack) -> str:
    """The stack's URL, with the page's static files where its nginx serves ``/static/``.

    The local nginx aliases ``static/`` inside the rendered config directory; run_lb_stack
    does not collect static files (yet), so the test does, like deploy.sh's collectstatic.
    """
    target = stack.dir / "conf" / "static"
    if not (target / "arena" / "arena.js").exists():
        env = {**stack_env(), "STATIC_ROOT": str(target)}
        subprocess.run(
            [sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"],
            cwd=EXAMPLE,
            env=env,
            check=True,
            timeout=120,
        )
    if os.geteuid() == 0:
        # nginx started by root serves files as its workers' user (nobody), and pytest's
        # temporary directories are 0700: let the workers walk to the static files.
        for directory in [target, *target.parents]:
            if directory == Path(tempfile.gettempdir()):
                break
            directory.chmod(directory.stat().st_mode | 0o005)
        for path in target.rglob("*"):
            path.chmod(path.stat().st_mode | 0o005)
    return f"http://127.0.0.1:{stack.port}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is not installed (Debian: apt-get install chromium).")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as playwright:
        # The Debian browser, never a downloaded one; no sandbox when the tests run as root.
        launched = playwright.chromium.launch(
            executable_path=chromium, headless=True, chromium_sandbox=os.geteuid() != 0
        )
        try:
            yield launched
        finally:
            launched.close()


class Console:
    """Every console error and uncaught exception of the pages it watches."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def watch(self, page: Any) -> Any:
        # Printed: pytest shows the captured output of a failing test.
        page.on("console", lambda m: print(f"[console {m.type}] {m.text} {m.location}"))
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        page.set_default_timeout(WAIT_MS)
        return page


def tab_to(page: Any, selector: str, limit: int = 40) -> None:
    """Press Tab until ``selector`` has the focus: it is reachable by keyboard alone."""
    for _ in range(limit):
        if page.evaluate("(s) => document.activeElement === document.querySelector(s)", selector):
            return
        page.keyboard.press("Tab")
    pytest.fail(f"{selector} not reached with {limit} presses of Tab")


def answer(page: Any, model: str) -> dict[str, str]:
    return dict(
        page.evaluate(
            """(m) => { const el = document.querySelector('#answer-' + m);
                return {state: el.dataset.state, replicas: el.dataset.replicas || '',
                        reconnects: el.dataset.reconnects || '0',
                        text: el.querySelector('.text').textContent,
                        busy: el.querySelector('.text').getAttribute('aria-busy')}; }""",
            model,
        )
    )


def log_in(page: Any) -> None:
    tab_to(page, "#password")
    page.keyboard.type("demo-password")
    page.keyboard.press("Enter")
    page.wait_for_selector("#logged-in:not([hidden])")
    assert re.fullmatch(
        r"Logged in as demo \(by web-\d+\)\.", page.text_content("#account-status") or ""
    )


def ask(page: Any, length: str) -> None:
    tab_to(page, "#prompt")
    page.keyboard.press("Control+A")
    page.keyboard.type(PROMPT)
    tab_to(page, "#length")
    page.select_option("#length", length)
    tab_to(page, "#ask-button")
    page.keyboard.press("Enter")


def test_demo_page_login_ask_vote_chat(
    site: str, stack: Stack, browser: Any, tmp_path: Path
) -> None:
    stack.heal()
    shots = SCREENSHOTS if os.environ.get("ARENA_UPDATE_SCREENSHOTS") == "1" else tmp_path
    console = Console()
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = console.watch(context.new_page())
    page.goto(site + "/")
    assert page.title().startswith("Arena")
    # The static files came through nginx: the script ran (the stack panel filled itself)
    # and the stylesheet applied (the skip link is moved off screen).
    page.wait_for_selector("#stack-rows tr")
    assert page.evaluate("getComputedStyle(document.querySelector('.skip')).position") == (
        "absolute"
    )

    log_in(page)

    ask(page, "60")
    # Token by token: text appears while the answer is still streaming (aria-busy).
    page.wait_for_function(
        "() => { const a = document.querySelector('#answer-a');"
        " return a.dataset.state === 'streaming' && a.querySelector('.text').textContent; }"
    )
    assert answer(page, "a")["busy"] == "true"
    page.wait_for_function(
        "() => [...document.querySelectorAll('.answer')].every(a => a.dataset.state === 'done')"
    )
    for model in ("a", "b"):
        seen = answer(page, model)
        assert seen["text"] == " ".join(voice_tokens(model, PROMPT, 60)), model
        assert REPLICA.match(seen["replicas"]), seen
        assert seen["busy"] == "false"
        assert page.text_content(f"#answer-{model} .replicas") == seen["replicas"]
    assert answer(page, "a")["text"] != answer(page, "b")["text"]

    # Vote (keyboard); the vote is in the database every replica reads.
    before = get_json(stack.port, "/api/votes/")[1]["tally"]
    tab_to(page, '#vote button[data-winner="b"]')
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('#vote-status').textContent.includes('stored')")
    assert re.fullmatch(
        r"Vote for Model B stored by web-\d+\.", page.text_content("#vote-status") or ""
    )
    tallies = [get_json(stack.port, "/api/votes/")[1]["tally"] for _ in range(6)]
    assert all(t == {**before, "b": before["b"] + 1} for t in tallies), (before, tallies)

    # Chat between two pages (two tabs of the same user), each on whatever replica nginx chose.
    other = console.watch(context.new_page())
    other.goto(site + "/")
    for tab in (page, other):
        tab.wait_for_selector("#chat[data-connected='true']")
    tab_to(page, "#chat-input")
    page.keyboard.type("hello from the first tab")
    page.keyboard.press("Enter")
    other.wait_for_selector("#chat-log li:has-text('hello from the first tab')")
    tab_to(other, "#chat-input")
    other.keyboard.type("hello back from the second tab")
    other.keyboard.press("Enter")
    page.wait_for_selector("#chat-log li:has-text('hello back from the second tab')")
    for tab in (page, other):
        lines = tab.locator("#chat-log li").all_text_contents()
        assert all(re.search(r"demo: .* (via|delivered by) web-\d+$", line) for line in lines), (
            lines
        )

    # Every API call names its replica; the panel lists the three, ready.
    calls = page.locator("#call-log li").all_text_contents()
    assert any(re.fullmatch(r"POST /auth/login/ → 200 · web-\d+", c) for c in calls), calls
    assert any(re.fullmatch(r"POST /api/votes/ → 201 · web-\d+", c) for c in calls), calls
    page.wait_for_function(
        "() => [...document.querySelectorAll('#stack-rows tr')]"
        ".filter(r => r.querySelector('.state-ready')).length === 3"
    )
    rows = page.locator("#stack-rows tr th").all_text_contents()
    assert rows == ["web-1", "web-2", "web-3"]

    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "arena-desktop.png"), full_page=True)

    # Phone width: nothing wider than the screen, same page.
    phone = browser.new_context(
        viewport={"width": 375, "height": 812}, device_scale_factor=2, is_mobile=True
    )
    small = console.watch(phone.new_page())
    small.goto(site + "/")
    small.wait_for_selector("#stack-rows tr")
    log_in(small)
    ask(small, "24")
    small.wait_for_function(
        "() => [...document.querySelectorAll('.answer')].every(a => a.dataset.state === 'done')"
    )
    small.wait_for_selector("#chat[data-connected='true']")
    assert small.evaluate("document.documentElement.scrollWidth") <= 375
    small.evaluate("document.activeElement.blur(); window.scrollTo(0, 0)")
    small.screenshot(path=str(shots / "arena-phone.png"))
    assert (shots / "arena-phone.png").stat().st_size > 10_000

    # Log out (keyboard) on the first tab.
    tab_to(page, "#logout")
    page.keyboard.press("Enter")
    page.wait_for_selector("#login-form:not([hidden])")
    assert re.fullmatch(r"Logged out \(by web-\d+\)\.", page.text_content("#account-status") or "")
    phone.close()
    context.close()
    assert console.errors == []


def test_demo_streams_survive_a_rolling_restart(site: str, stack: Stack, browser: Any) -> None:
    """A rolling restart while both answers stream: each answer moves to another replica
    (the reconnect event, then Last-Event-ID) and its text is still the model's answer, every
    token once and in order; the chat reconnects too."""
    stack.heal()
    console = Console()
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = console.watch(context.new_page())
    page.goto(site + "/")
    page.wait_for_selector("#chat[data-connected='true']")
    ask(page, "2000")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.answer')].every(a => a.dataset.replicas)"
    )
    expected = {m: voice_tokens(m, PROMPT, 2000) for m in ("a", "b")}

    outcome: dict[str, Any] = {}

    def restart() -> None:
        try:
            outcome["answer"] = stack.act("rolling-restart")
        except BaseException as exc:
            outcome["error"] = exc

    started = time.monotonic()
    thread = threading.Thread(target=restart, name="rolling-restart")
    thread.start()
    thread.join(timeout=180)
    assert not thread.is_alive(), "the rolling restart did not end within 180 s"
    assert "error" not in outcome, outcome
    took = time.monotonic() - started

    for model in ("a", "b"):
        seen = answer(page, model)
        hops = seen["replicas"].split()
        assert seen["state"] == "streaming", seen["state"]
        assert int(seen["reconnects"]) >= 1, seen["reconnects"]
        assert len(hops) >= 2, hops
        assert all(REPLICA.match(h) for h in hops), hops
        words = seen["text"].split(" ")
        assert words == expected[model][: len(words)], f"model {model}: answer garbled"
    # Still streaming afterwards, on the restarted stack.
    counts = {m: len(answer(page, m)["text"].split()) for m in ("a", "b")}
    page.wait_for_function(
        "(c) => ['a', 'b'].every(m => document.querySelector('#answer-' + m + ' .text')"
        ".textContent.split(' ').length > c[m] + 5)",
        arg=counts,
    )
    # The chat's socket was closed by its draining replica (1012) and came back.
    page.wait_for_selector("#chat[data-connected='true']")
    page.fill("#chat-input", "still here after the restart")
    page.press("#chat-input", "Enter")
    page.wait_for_selector("#chat-log li:has-text('still here after the restart')")
    print(
        f"\n[demo-browser] rolling restart took {took:.1f}s; answers moved "
        f"{answer(page, 'a')['replicas']!r} and {answer(page, 'b')['replicas']!r}"
    )
    context.close()
    assert console.errors == []
