"""The web UI in a real browser: Debian's Chromium driven by Playwright, against one real
``deployserver serve`` (process runtime) for the whole module. Without Chromium or
Playwright the tests skip, except with DEPLOYSERVER_REQUIRE_DOCKER=1 (CI), where they fail.

Every page a test opens is watched: a console error or an uncaught exception fails it.
``shoot(page, name)`` writes the page at 1280 and 390 px wide to tests/ui/screenshots/.
"""

from __future__ import annotations

import os
import re
import shutil
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from deployserver.client.sdk import DeployClient
from tests.helpers import bearer, server_process

SCREENSHOTS = Path(__file__).parent / "screenshots"
WIDTHS = (1280, 390)
LEAKED_WORDS = """() => {
  const walker = document.createTreeWalker(document.querySelector('main'), NodeFilter.SHOW_TEXT);
  const found = [];
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (n.parentElement.closest('pre, code, textarea')) continue;
    const bad = n.textContent.match(/\\b(null|undefined|NaN|\\[object Object\\])\\b/);
    if (bad) found.push(n.textContent.trim().slice(0, 80));
  }
  return found;
}"""
NEXT_FRAMES = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"


def _missing(what: str) -> None:
    message = f"{what} (apt-get install chromium; pip install -e '.[test]')"
    if os.environ.get("DEPLOYSERVER_REQUIRE_DOCKER") == "1":
        pytest.fail(f"{message}: the browser tests may not skip in CI")
    pytest.skip(message)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    found = os.environ.get("DEPLOYSERVER_CHROMIUM") or shutil.which("chromium")
    if not found:
        _missing("no chromium on PATH (or DEPLOYSERVER_CHROMIUM)")
    return str(found)


# Module scope, not session: while Playwright's sync API is open it marks an event loop as
# running in this thread, and the asyncio tests that run after tests/ui could not start theirs.
@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright is not installed")
    with sync_playwright() as pw:
        # --no-sandbox: the tests run as root, where Chromium's sandbox cannot start
        b = pw.chromium.launch(executable_path=chromium_path, args=["--no-sandbox"])
        yield b
        b.close()


@dataclass
class UIServer:
    url: str
    token: str
    data_dir: Path
    api: httpx.Client


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UIServer]:
    folder = tmp_path_factory.mktemp("ui")
    env = {
        "DEPLOYSERVER_RUNTIME": "process",
        "DEPLOYSERVER_HEALTH_DEADLINE": "60",
        # two failed logins lock a name out: the 429 a person must be told about
        "DEPLOYSERVER_LOGIN_LOCKOUT_AFTER": "2",
    }
    with (
        server_process(folder / "data", env) as (url, _proc, token),
        httpx.Client(base_url=url, headers=bearer(token), timeout=60) as api,
    ):
        yield UIServer(url, token, folder / "data", api)


@dataclass
class Watched:
    """A page and what went wrong in it. Chromium logs each answer of 4xx/5xx as a console
    error: a test that provokes some on purpose names their statuses in ``expected``."""

    page: Any
    problems: list[str] = field(default_factory=list)
    expected: set[int] = field(default_factory=set)
    network_changes: int = 0
    """Loads Chromium cut off because the host's network changed (a Docker network made or
    removed, by a cell of this very test or by anything else on the machine): the host's
    doing, not the UI's; a navigation cut off that way is made again (see ``visit``)."""

    def console(self, message: Any) -> None:
        if message.type != "error":
            return
        text = message.text
        if "net::ERR_NETWORK_CHANGED" in text:
            self.network_changes += 1
            return
        status = re.search(r"Failed to load resource: .* status of (\d+)", text)
        if status and int(status.group(1)) in self.expected:
            return
        self.problems.append(f"console error: {text}")


@pytest.fixture
def watched(browser: Any, ui_server: UIServer) -> Iterator[Watched]:
    context = browser.new_context(
        viewport={"width": WIDTHS[0], "height": 900}, base_url=ui_server.url
    )
    page = context.new_page()
    page.set_default_timeout(60_000)
    w = Watched(page)
    WATCHED[page] = w
    page.on("console", w.console)
    page.on("pageerror", lambda e: w.problems.append(f"page error: {e}"))
    yield w
    context.close()
    assert not w.problems, w.problems


@pytest.fixture
def page(watched: Watched) -> Any:
    return watched.page


WATCHED: weakref.WeakKeyDictionary[Any, Watched] = weakref.WeakKeyDictionary()
DRAWN_WITHIN_MS = 15_000


def visit(page: Any, path: str) -> None:
    """Go to ``path`` and wait until the UI has drawn it; made again (up to twice) when a
    change of the host's network cut its loading off, and only then."""
    watched = WATCHED.get(page)
    for attempt in range(3):
        seen = watched.network_changes if watched else 0
        page.goto(path)
        try:
            page.locator("main[aria-busy='false']").wait_for(
                state="attached", timeout=DRAWN_WITHIN_MS
            )
            return
        except Exception:
            if watched is None or watched.network_changes == seen or attempt == 2:
                raise


def sign_in(page: Any, token: str, path: str = "/ui/models") -> None:
    """Sign in by pasting ``token``, landing on ``path``."""
    visit(page, f"/ui/signin?next={path}")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Use this token").click()
    page.wait_for_url(f"**{path}")
    settled(page)


def settled(page: Any) -> None:
    """Wait until the UI has drawn the page it is on (its <main> is no longer busy)."""
    page.locator("main[aria-busy='false']").wait_for(state="attached")


def shoot(page: Any, name: str) -> None:
    """The page as it is now, at each width, into tests/ui/screenshots/NAME-WIDTH.png."""
    SCREENSHOTS.mkdir(exist_ok=True)
    leaked = page.evaluate(LEAKED_WORDS)
    assert not leaked, f"the page shows a placeholder of the code, not words: {leaked}"
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    size = page.viewport_size
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        # two animation frames: laid out and painted at the new width
        page.evaluate(NEXT_FRAMES)
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}.png"), full_page=True)
    page.set_viewport_size(size)


ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "templates" / "python"
MODEL = "sentiment-python"


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as pw_expect

    return pw_expect(locator)


def active_ready(api: httpx.Client, model: str) -> dict[str, Any] | None:
    found = api.get(f"/api/v1/models/{model}")
    if found.status_code != 200 or not found.json()["active_deploy_id"]:
        return None
    record: dict[str, Any] = api.get(
        f"/api/v1/deployments/{found.json()['active_deploy_id']}"
    ).json()
    return record if record["status"] == "ready" else None


def ensure_sentiment(server: UIServer) -> dict[str, Any]:
    """The template deployed and ready (pushed over HTTP with the SDK when a test before
    this one did not upload it through the UI)."""
    record = active_ready(server.api, MODEL)
    if record is None:
        with DeployClient(server.url, server.token) as ds:
            up = ds.push(TEMPLATE)
            assert ds.wait(up.deploy_id, timeout=120).status == "ready"
        record = active_ready(server.api, MODEL)
    assert record is not None
    return record


def keyboard_walk(page: Any) -> None:
    """Every visible control has a name a screen reader says, and Tab reaches each one."""
    settled(page)
    unnamed = page.evaluate(
        """() => [...document.querySelectorAll('a[href], button, input, select, textarea')]
          .filter(el => !el.disabled && (el.offsetParent !== null || el.type === 'file'))
          .filter(el => {
            const label = (el.labels && el.labels.length) || el.getAttribute('aria-label')
              || el.getAttribute('aria-labelledby') || (el.textContent || '').trim();
            return !label;
          }).map(el => el.outerHTML.slice(0, 120))"""
    )
    assert unnamed == [], f"controls without a name: {unnamed}"
    # A live update may re-render the page mid-walk (it drops the data-kb marks): then the
    # walk starts again on the new page, a few times at most.
    for _ in range(3):
        missing, rerendered = _tab_walk(page)
        if not rerendered:
            break
        settled(page)
    names = page.evaluate(
        """(ks) => ks.map(k => {
          const el = document.querySelector(`[data-kb='${k}']`);
          return el ? el.outerHTML.slice(0, 100) : `(control ${k}, re-rendered)`;
        })""",
        sorted(missing),
    )
    assert not missing, f"not reachable with Tab: {names}"


def _tab_walk(page: Any) -> tuple[set[str], bool]:
    """Mark every visible control, Tab through the page; the marks not reached, and whether
    the page re-rendered meanwhile (some mark is gone)."""
    wanted = page.evaluate(
        """() => {
          const els = [...document.querySelectorAll('a[href], button, input, select, textarea')]
            .filter(el => !el.disabled && (el.offsetParent !== null || el.type === 'file')
              && !el.closest('[hidden]') && !el.closest('dialog'));
          els.forEach((el, i) => el.setAttribute('data-kb', String(i)));
          return els.length;
        }"""
    )
    reached: set[str] = set()
    page.locator("body").focus()
    for _ in range(wanted * 2 + 10):
        page.keyboard.press("Tab")
        kb = page.evaluate("() => document.activeElement && document.activeElement.dataset.kb")
        if kb is not None:
            if kb in reached and len(reached) == wanted:
                break
            reached.add(kb)
    # radio groups take one Tab stop: the others of a group are reached with the arrows
    radios = page.evaluate(
        """() => [...document.querySelectorAll('input[type=radio][data-kb]')]
          .filter(el => !el.checked).map(el => el.dataset.kb)"""
    )
    marked = page.evaluate("() => document.querySelectorAll('[data-kb]').length")
    missing = set(map(str, range(wanted))) - reached - set(radios)
    return missing, marked != wanted
