"""The run viewer in real Chromium (Debian's ``chromium``, driven by Playwright through
``executable_path``; no browser is downloaded): the live tree, errors in red, filters,
a run's complete record, the time from a token's production to its drawing, and a
server with a token (the page takes it from its address's fragment, or asks for it, and
it is in no URL the browser requests or keeps). Every page runs under the server's
Content-Security-Policy, which it must not break.

Marked ``browser``: ``.ci/run`` runs these as a step of their own, with
``TROUPE_BROWSER_REQUIRED=1``. Elsewhere, where Chromium or Playwright is missing, they
skip, saying what to install; in that step they fail instead.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import trio

from actors import Agent, ScriptedChatModel, ScriptedTurn
from actors._demo import make_cat_agent

from .sse_client import serving

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("TROUPE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
REPORT = os.environ.get("TROUPE_VIEWER_REPORT")
"""Where to write the latency figures as JSON (the README quotes them)."""

SHOWN = 60_000
"""Milliseconds the page may take to show what the server sent: a bound, not a speed
(10 s was too short on a loaded machine)."""


def _missing(what: str) -> None:
    if os.environ.get("TROUPE_BROWSER_REQUIRED"):
        pytest.fail(f"{what} is missing, and the browser step needs it: .ci/run installs it")
    pytest.skip(f"{what} is missing: apt-get install chromium; pip install playwright")


WORDS = (
    "the",
    "cat",
    "is",
    "under",
    "the",
    "bed",
    "with",
    "socks",
    ",",
    "shoes",
    "and",
    "dust",
    "bunnies",
    ".",
)


def _paced(tokens: int, delay: float, name: str) -> ScriptedChatModel:
    text = " ".join(WORDS[i % len(WORDS)] for i in range(tokens))
    return ScriptedChatModel([ScriptedTurn(text)], token_delay=delay, name=name)


PERFORMERS: dict[str, Any] = {
    "cat": make_cat_agent(),
    "nested": make_cat_agent(nested=True),
    "broken": Agent(ScriptedChatModel([ScriptedTurn("half", error="the model fell over")])),
    "paced": _paced(300, 0.01, "Paced"),  # 100 tokens a second
    "long": _paced(10_000, 0.0, "Long"),
    "small": _paced(20, 0.002, "Small"),
}


TOKEN = "s3cret/+ &=#?%"
"""A token with every character a URL gives a meaning to."""
# (A test's own page.wait_for_function takes a function, "() => ...": an expression is
# run with eval, which the policy refuses, rightly.)
WATCH_CSP = """
window.__csp = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
"""


def _serve(**options: Any) -> str:
    """The app on 127.0.0.1, in a thread of its own (the browser is driven from this one):
    its address."""
    started: list[str] = []
    ready = threading.Event()

    async def main() -> None:
        async with serving(PERFORMERS, history=500, **options) as served:
            started.append(served.base_url)
            ready.set()
            await trio.sleep_forever()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    assert ready.wait(30), "the server did not start"
    # The server's trio run ends with the process (a daemon thread): hypercorn stops on
    # a signal, which this thread cannot send to the other one.
    return started[0]


@pytest.fixture(scope="module")
def server() -> str:
    return _serve()


@pytest.fixture(scope="module")
def token_server() -> str:
    return _serve(token=TOKEN)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        _missing("Chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


def _new_page(browser: Any) -> tuple[Any, Any, list[str]]:
    """A page in a context of its own (a tab's storage of its own), watching for
    errors and for what the Content-Security-Policy refuses."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.add_init_script(WATCH_CSP)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.on(
        "console",
        lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None,
    )
    return context, opened, errors


def _closed(context: Any, opened: Any, errors: list[str]) -> None:
    refused = opened.evaluate("window.__csp")
    context.close()
    assert not errors, f"the page raised: {errors}"
    assert refused == [], f"the Content-Security-Policy refused: {refused}"


@pytest.fixture
def page(browser: Any, server: str) -> Iterator[Any]:
    context, opened, errors = _new_page(browser)
    opened.goto(server + "/")
    opened.wait_for_selector("#connection.live", timeout=SHOWN)
    yield opened
    _closed(context, opened, errors)


def _run(
    server: str, performer: str, payload: Any = "where is the cat?", token: str | None = None
) -> dict[str, Any]:
    response = httpx.post(
        f"{server}/runs/wait",
        json={"performer": performer, "input": payload},
        headers={"authorization": f"Bearer {token}"} if token else {},
        timeout=60,
    )
    return {"status": response.status_code, "body": response.json()}


def _start(server: str, performer: str, payload: Any = "q") -> str:
    response = httpx.post(
        f"{server}/runs", json={"performer": performer, "input": payload}, timeout=30
    )
    assert response.status_code == 202, response.text
    run_id: str = response.json()["run_id"]
    return run_id


def _names_under(page: Any, run_id: str) -> list[str]:
    names: list[str] = page.eval_on_selector_all(
        f'.node[data-id="{run_id}"] > .children .name', "els => els.map(e => e.textContent)"
    )
    return names


def test_the_tree_shows_a_nested_run_live(page: Any, server: str, tmp_path: Path) -> None:
    result = _run(server, "nested")
    assert result["status"] == 200
    page.wait_for_selector("#tree > .node.status-ok", timeout=SHOWN)
    root = page.locator("#tree > .node").first
    assert root.locator("> .head .name").inner_text() == "Agent"
    tree_names = page.eval_on_selector_all(".node .name", "els => els.map(e => e.textContent)")
    assert "where_cat_is_hiding" in tree_names and "get_items" in tree_names
    # the model called inside get_items is drawn under get_items
    get_items = page.locator('.node.kind-tool:has(> .head .name:text-is("get_items"))')
    assert get_items.locator("> .children .node .name").inner_text() == "Get Items LLM"
    # the streamed answer is there, and usage on model runs
    answer = result["body"]["output"]["output"]
    texts = page.eval_on_selector_all(
        ".node.kind-chat_model .text", "e => e.map(x => x.textContent)"
    )
    assert any(answer in text for text in texts)
    assert page.locator(".node.kind-chat_model .usage").first.inner_text().endswith("out")
    assert page.locator("#root-list li.selected.status-ok").count() == 1
    page.screenshot(path=str(tmp_path / "viewer.png"), full_page=True)
    if os.environ.get("TROUPE_SCREENSHOT"):
        page.screenshot(path=os.environ["TROUPE_SCREENSHOT"])


def test_an_error_run_is_red_with_its_message(page: Any, server: str) -> None:
    result = _run(server, "broken")
    assert result["status"] == 200 and result["body"]["status"] == "error"
    page.wait_for_selector("#tree > .node.status-error", timeout=SHOWN)
    name = page.locator("#tree > .node.status-error > .head .name")
    assert name.evaluate("e => getComputedStyle(e).color") == "rgb(198, 40, 40)"
    assert "the model fell over" in page.locator("#tree .error").first.inner_text()
    assert page.locator("#root-list li.status-error").count() >= 1


def test_filters_and_the_complete_record(page: Any, server: str) -> None:
    _run(server, "cat")
    page.wait_for_selector("#tree > .node.status-ok", timeout=SHOWN)
    page.fill("#filter-name", "get_items")
    page.wait_for_selector(".node.kind-tool.hidden", state="attached")
    visible = page.eval_on_selector_all(
        ".node:not(.hidden):not(.filtered-out) > .head .name", "e => e.map(x => x.textContent)"
    )
    assert visible == ["get_items"]
    page.fill("#filter-name", "")
    page.select_option("#filter-kind", "chat_model")
    visible = page.eval_on_selector_all(
        ".node:not(.hidden):not(.filtered-out) > .head .name", "e => e.map(x => x.textContent)"
    )
    assert set(visible) == {"ScriptedChatModel"} and len(visible) == 3
    page.select_option("#filter-kind", "")
    page.locator(".node.kind-tool > .head").first.click()
    page.wait_for_function(
        "() => document.getElementById('details-json').textContent.startsWith('{')"
    )
    record = json.loads(page.locator("#details-json").inner_text())
    assert record["start"]["event"] == "on_tool_start"
    assert record["end"]["event"] == "on_tool_end" and record["end"]["status"] == "ok"
    assert record["start"]["run_id"] == record["end"]["run_id"]


def test_tokens_reach_the_page_in_time_at_100_per_second(page: Any, server: str) -> None:
    page.evaluate("window.__troupe.latencies.length = 0")
    _run(server, "paced")
    page.wait_for_function(
        "() => document.querySelector('#tree > .node.status-ok') !== null", timeout=20_000
    )
    text = page.locator("#tree > .node .text").first.inner_text()
    assert text == " ".join(WORDS[i % len(WORDS)] for i in range(300))  # every token, in order
    latencies = page.evaluate("window.__troupe.latencies")
    assert len(latencies) >= 250  # each token drawn (a frame may draw several)
    p50 = statistics.median(latencies) * 1000
    p99 = statistics.quantiles(latencies, n=100)[98] * 1000
    print(f"\ntoken production -> on the page at 100 tokens/s: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    if REPORT:
        Path(REPORT).write_text(json.dumps({"p50_ms": p50, "p99_ms": p99, "n": len(latencies)}))


def test_big_runs_stay_smooth(page: Any, server: str) -> None:
    # a long answer streams while 100 runs go on at once; the page counts its frames
    page.evaluate(
        """() => {
            window.__frames = [];
            let last = performance.now();
            const tick = (now) => {
                window.__frames.push(now - last);
                last = now;
                if (window.__frames.length < 100000) requestAnimationFrame(tick);
            };
            requestAnimationFrame(tick);
        }"""
    )
    long_id = _start(server, "long")
    page.locator(f'#root-list li[data-id="{long_id}"]').click()
    ids = [_start(server, "small") for _ in range(100)]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = page.evaluate(
            "ids => ids.filter(id => "
            "(window.__troupe.state.rootInfo.get(id) || {}).status === 'ok').length",
            [*ids, long_id],
        )
        if done == len(ids) + 1:
            break
        time.sleep(0.2)
    assert done == len(ids) + 1, f"{done} of {len(ids) + 1} runs shown as ended"
    page.wait_for_selector(f'#tree > .node[data-id="{long_id}"].status-ok', timeout=SHOWN)
    button = page.locator("#tree .node.kind-chat_model .more")
    assert "show all" in button.inner_text()  # the long text is cut, with a way to expand
    chars = page.evaluate(
        "id => [...window.__troupe.state.runs.values()]"
        ".find(r => r.root === id && r.kind === 'chat_model').textChars",
        long_id,
    )
    assert chars == len(" ".join(WORDS[i % len(WORDS)] for i in range(10_000)))
    button.click()
    page.wait_for_function(
        "n => document.querySelector('#tree .node.kind-chat_model .text').textContent.length >= n",
        arg=chars,
    )
    frames = page.evaluate("window.__frames")
    slow = sorted(frames)[int(len(frames) * 0.99)]
    print(f"\nframes while 101 runs streamed: {len(frames)}, p99 gap {slow:.1f} ms")
    assert page.locator("#root-list li").count() >= 101


# -- a server with a token ----------------------------------------------------------------


def _requests(opened: Any) -> list[Any]:
    requests: list[Any] = []
    opened.on("request", lambda request: requests.append(request))
    return requests


def _no_token_in(requests: list[Any], given_at: int = 0) -> None:
    """The token is in no URL the page requested, and in the header of every request
    for data from the ``given_at``-th on."""
    for request in requests:
        url = request.url
        assert TOKEN not in url and quote(TOKEN, safe="") not in url, url
        assert "token" not in url, url
    data = [r for r in requests[given_at:] if "/viewer/runs" in r.url or "/viewer/events" in r.url]
    assert data, "the page read no data"
    for request in data:
        assert request.all_headers().get("authorization") == f"Bearer {TOKEN}", request.url


def test_a_token_in_the_fragment_is_in_no_url(browser: Any, token_server: str) -> None:
    context, opened, errors = _new_page(browser)
    requests = _requests(opened)
    opened.goto(f"{token_server}/#token={quote(TOKEN, safe='')}")
    opened.wait_for_selector("#connection.live", timeout=SHOWN)
    # the address no longer holds it, nor does the tab's history entry
    assert opened.evaluate("location.href") == f"{token_server}/"
    result = _run(token_server, "cat", token=TOKEN)
    assert result["status"] == 200
    run_id = result["body"]["run_id"]
    opened.wait_for_selector(f'#root-list li[data-id="{run_id}"]', timeout=SHOWN)
    opened.wait_for_selector("#tree > .node.status-ok", timeout=SHOWN)
    # the page's own files came without it (the server serves them to anyone)
    files = {r.url.removeprefix(token_server) for r in requests}
    assert {"/viewer/viewer.css", "/viewer/viewer.js"} <= files
    # away and back: the entry comes back without the token, and the tab still has it
    opened.goto("about:blank")
    opened.go_back()
    assert opened.url == f"{token_server}/"
    opened.wait_for_selector("#connection.live", timeout=SHOWN)
    opened.wait_for_selector(f'#root-list li[data-id="{run_id}"]', timeout=SHOWN)
    assert opened.locator("#token-form").is_hidden()
    _no_token_in(requests)
    _closed(context, opened, errors)


def test_the_page_asks_for_the_token_it_lacks(browser: Any, token_server: str) -> None:
    context, opened, errors = _new_page(browser)
    requests = _requests(opened)
    opened.goto(f"{token_server}/")
    opened.wait_for_selector("#token-form:not([hidden])", timeout=SHOWN)
    assert opened.locator("#connection").inner_text() == "needs a token"
    opened.fill("#token-input", "wrong")
    opened.press("#token-input", "Enter")
    opened.wait_for_function(
        "() => document.getElementById('token-said').textContent.includes('refused')"
    )
    assert opened.locator("#token-form").is_visible()
    given_at = len(requests)
    opened.fill("#token-input", TOKEN)
    opened.press("#token-input", "Enter")
    opened.wait_for_selector("#connection.live", timeout=SHOWN)
    result = _run(token_server, "nested", token=TOKEN)
    opened.wait_for_selector(f'#root-list li[data-id="{result["body"]["run_id"]}"]', timeout=SHOWN)
    assert opened.evaluate("location.href") == f"{token_server}/"
    assert opened.locator("#token-form").is_hidden()
    _no_token_in(requests, given_at)
    _closed(context, opened, errors)
