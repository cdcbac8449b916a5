"""The run viewer's paused runs, in real Chromium (see tests/test_viewer.py): what a
paused run waits for is shown with Approve and Deny buttons, which resume it through
``POST /runs/{run_id}/resume``; the server's refusal is shown. Tools count their side
effects in a file."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from runtime import open_runtime

from .sse_client import serving
from .test_serve_resume import ASK, calls, payer
from .test_viewer import SHOWN, _closed, _new_page, browser

pytestmark = pytest.mark.browser
__all__ = ["browser"]  # the fixture, shared


@pytest.fixture(scope="module")
def store_server() -> Iterator[tuple[str, Path]]:
    """The payer on 127.0.0.1 with a store, in a thread of its own; its address and its
    ledger."""
    folder = Path(tempfile.mkdtemp())
    ledger = folder / "ledger.txt"
    started: list[str] = []
    ready = threading.Event()

    async def main() -> None:
        async with (
            open_runtime(store=f"sqlite:///{folder}/runs.db") as rt,
            serving({"payer": payer(ledger), "asker": payer(ledger, *ASK)}, runtime=rt) as served,
        ):
            started.append(served.base_url)
            ready.set()
            await trio.sleep_forever()

    threading.Thread(target=trio.run, args=(main,), daemon=True).start()
    assert ready.wait(30), "the server did not start"
    yield started[0], ledger


def _paused(server: str, run_id: str, performer: str = "payer") -> None:
    body = {"input": "pay five", "run_id": run_id, "performer": performer}
    response = httpx.post(f"{server}/runs/wait", json=body, timeout=60)
    assert response.json()["status"] == "paused", response.text


def _open(browser: Any, server: str, run_id: str) -> tuple[Any, Any, list[str]]:
    context, page, errors = _new_page(browser)
    page.goto(server + "/")
    page.wait_for_selector("#connection.live", timeout=SHOWN)
    page.locator(f'#root-list li[data-id="{run_id}"]').click()
    page.wait_for_selector("#pending .pending-item", timeout=SHOWN)
    return context, page, errors


def _said(page: Any, start: str) -> None:
    """Wait until the box says something starting with ``start``."""
    page.wait_for_function(
        "(start) => document.getElementById('pending-said').textContent.startsWith(start)",
        arg=start,
        timeout=SHOWN,
    )


@pytest.mark.parametrize(("button", "ran"), [("approve", ["pay 5"]), ("deny", [])])
def test_approve_or_deny_resumes_the_paused_run(
    browser: Any, store_server: tuple[str, Path], button: str, ran: list[str]
) -> None:
    server, ledger = store_server
    before = calls(ledger)
    _paused(server, f"view-{button}")
    context, page, errors = _open(browser, server, f"view-{button}")
    item = page.locator("#pending .pending-item")
    assert 'pay({"amount":5})' in item.inner_text()
    assert page.locator("#root-summary.status-paused").count() == 1
    item.locator(f"button.{button}").click()
    _said(page, "resumed as")
    assert page.locator("#pending-said").inner_text().endswith("(ok)")
    assert calls(ledger) == [*before, *ran]  # the tool ran once, or never
    _closed(context, page, errors)


def test_a_refused_resume_is_shown_and_can_be_decided_again(
    browser: Any, store_server: tuple[str, Path]
) -> None:
    server, ledger = store_server
    before = calls(ledger)
    _paused(server, "view-twice")
    context, page, errors = _open(browser, server, "view-twice")
    # resumed elsewhere meanwhile: the page's resume is refused (409), and says so
    response = httpx.post(
        f"{server}/runs/view-twice/resume",
        json={"decisions": {"p1": False}, "stream": False},
        timeout=60,
    )
    assert response.status_code == 200
    page.locator("#pending button.approve").click()
    _said(page, "not resumed")
    assert "(409)" in page.locator("#pending-said").inner_text()
    assert page.locator("#pending button.approve").count() == 1  # it may decide again
    assert calls(ledger) == before
    _closed(context, page, errors)


def test_an_interrupt_is_answered_in_the_box(browser: Any, store_server: tuple[str, Path]) -> None:
    server, ledger = store_server
    before = calls(ledger)
    _paused(server, "view-ask", "asker")
    context, page, errors = _open(browser, server, "view-ask")
    assert '{"question":"colour?"}' in page.locator("#pending .pending-item").inner_text()
    page.locator("#pending input.answer").fill('"blue"')
    page.locator("#pending button.send-answer").click()
    _said(page, "resumed as")
    assert calls(ledger) == [*before, "ask blue"]
    _closed(context, page, errors)
