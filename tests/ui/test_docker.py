"""The web UI against a server on the Docker runtime: the template uploaded from the
browser runs in a hardened container, and answers a prediction sent from the browser."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import server_process
from tests.ui.conftest import MODEL, TEMPLATE, UIServer, Watched, expect, settled, sign_in

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture
def docker_server(docker_client: Any, tmp_path: Path) -> Iterator[UIServer]:
    with server_process(tmp_path / "data", {"DEPLOYSERVER_RUNTIME": "docker"}) as (url, _p, token):
        yield UIServer(url, token, tmp_path / "data", None)  # type: ignore[arg-type]


def test_upload_and_try_on_the_docker_runtime(browser: Any, docker_server: UIServer) -> None:
    context = browser.new_context(
        viewport={"width": 1280, "height": 900}, base_url=docker_server.url
    )
    page = context.new_page()
    page.set_default_timeout(60_000)
    watched = Watched(page)
    page.on("console", watched.console)
    page.on("pageerror", lambda e: watched.problems.append(f"page error: {e}"))
    try:
        sign_in(page, docker_server.token, "/ui/new")
        page.locator("#pick-folder").set_input_files(str(TEMPLATE))
        expect(page.get_by_label("Model name")).to_have_value(MODEL)
        page.get_by_role("button", name="Upload and deploy").click()
        page.wait_for_url(re.compile(r"/ui/deployments/"))
        expect(page.locator(".state .badge")).to_have_text("ready", timeout=180_000)
        cell = page.locator("section").filter(has=page.get_by_role("heading", name="Cell"))
        expect(cell).to_contain_text("docker")
        page.get_by_role("link", name="Try it", exact=True).first.click()
        settled(page)
        page.get_by_label("Request body (JSON)").fill('{"text": "a lovely day"}')
        page.get_by_role("button", name="Send").click()
        expect(page.locator(".answer-status")).to_have_text("200 OK")
        expect(page.locator(".answer-body")).to_contain_text('"label": "positive"')
    finally:
        context.close()
    assert not watched.problems, watched.problems
