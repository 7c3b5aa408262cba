"""Operating models from the web UI, in Chromium: roll back and stop (pushed live),
asynchronous predictions queued from Try it, tokens and users, scaling when the API has it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from deployserver.client.sdk import DeployClient
from tests.helpers import bearer, eventually
from tests.ui.conftest import (
    MODEL,
    TEMPLATE,
    UIServer,
    active_ready,
    ensure_sentiment,
    expect,
    keyboard_walk,
    settled,
    shoot,
    sign_in,
)

pytestmark = pytest.mark.slow


def version_row(page: Any, version: int) -> Any:
    link = page.get_by_role("link", name=f"version {version}", exact=True)
    return page.locator("tr").filter(has=link)


def test_roll_back_then_stop_pushed_live(page: Any, ui_server: UIServer, tmp_path: Path) -> None:
    first = ensure_sentiment(ui_server)
    # a second version, pushed from elsewhere while the page is open
    sign_in(page, ui_server.token, f"/ui/models/{MODEL}")
    v2 = tmp_path / "v2"
    v2.mkdir()
    for f in TEMPLATE.iterdir():
        (v2 / f.name).write_bytes(f.read_bytes())
    (v2 / "words.json").write_text('{"positive": ["sunny"], "negative": []}')
    with DeployClient(ui_server.url, ui_server.token) as ds:
        newer = ds.push(v2)
    row = version_row(page, newer.version)
    expect(row).to_contain_text("active", timeout=120_000)  # the page heard it, no reload
    old = version_row(page, first["version"])
    expect(old.get_by_role("button", name=re.compile("^Make version"))).to_be_visible()
    keyboard_walk(page)
    shoot(page, "model")

    # one click: the old version rises and takes over
    old.get_by_role("button", name=f"Make version {first['version']} of {MODEL} active").click()
    expect(old.locator(".tag")).to_have_text("active", timeout=120_000)
    expect(row.locator(".tag")).to_have_count(0)
    assert active_ready(ui_server.api, MODEL)["deploy_id"] == first["deploy_id"]  # type: ignore[index]

    # stop the active version, after confirming
    old.get_by_role("button", name=f"Stop version {first['version']} of {MODEL}").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Stop version")
    dialog.get_by_role("button", name="Stop").click()
    expect(old.locator(".badge")).to_have_text("stopped", timeout=60_000)
    record = ui_server.api.get(f"/api/v1/deployments/{first['deploy_id']}").json()
    assert record["status"] == "stopped" and record["desired_state"] == "stopped"


def test_tokens_and_users_for_admins_a_new_token_shown_once(page: Any, ui_server: UIServer) -> None:
    sign_in(page, ui_server.token, "/ui/admin")
    page.get_by_label("Name (shown as who did what)").fill("ci-bot")
    page.locator("input[name='token-scope'][value='deploy']").check()
    page.get_by_role("button", name="Create token").click()
    once = page.locator(".once")
    expect(once).to_contain_text("shown this once")
    token = once.locator(".secret").inner_text()
    assert token.startswith("dst_")
    me = httpx.get(f"{ui_server.url}/api/v1/auth/me", headers=bearer(token)).json()
    assert me["name"] == "ci-bot" and me["scopes"] == ["deploy", "read"]
    keyboard_walk(page)
    shoot(page, "admin")
    page.reload()
    expect(page.get_by_role("heading", name="Tokens & users")).to_be_visible()
    assert token not in page.content(), "never shown again"
    page.get_by_role("button", name=re.compile(r"^Revoke token ci-bot")).click()
    page.get_by_role("dialog").get_by_role("button", name="Revoke").click()
    eventually(
        lambda: (
            httpx.get(f"{ui_server.url}/api/v1/auth/me", headers=bearer(token)).status_code == 401
        ),
        what="the token refused",
    )


def test_a_prediction_queued_from_try_it_is_listed(page: Any, ui_server: UIServer) -> None:
    ensure_sentiment(ui_server)
    sign_in(page, ui_server.token, f"/ui/models/{MODEL}/try")
    body = page.get_by_label("Request body (JSON)")
    expect(body).to_have_value(re.compile(r'"text"'))
    body.fill('{"text": "a happy, nice queue"}')
    page.get_by_role("button", name="Queue asynchronously").click()
    queued = page.locator(".notice-ok")
    expect(queued).to_contain_text("Queued as")
    request_id = queued.locator("code").inner_text()
    queued.get_by_role("link").click()
    settled(page)
    expect(page.get_by_label("Model")).to_have_value(MODEL)
    row = page.locator("tr").filter(has=page.locator(f"code[title='{request_id}']"))
    expect(row.locator(".badge")).to_have_text("succeeded", timeout=60_000)
    expect(row).to_contain_text('"label":"positive"')
    keyboard_walk(page)
    shoot(page, "predictions")


def test_scaling_is_changed_from_the_model_page(page: Any, ui_server: UIServer) -> None:
    """The server has the scaling route: the model page offers it, and what it sends
    changes the active version's scaling (read back through the API)."""
    record = ensure_sentiment(ui_server)
    path = "/api/v1/deployments/{deploy_id}/scaling"
    assert path in ui_server.api.get("/openapi.json").json()["paths"]
    sign_in(page, ui_server.token, f"/ui/models/{MODEL}")
    expect(page.get_by_role("heading", name="Versions")).to_be_visible()
    heading = page.get_by_role("heading", name=re.compile("^Scaling"))
    panel = page.locator("form").filter(has=heading)
    panel.get_by_label("Fewest replicas").fill("1")
    panel.get_by_label("Most replicas").fill("2")
    panel.get_by_label("Requests in flight per replica").fill("8")
    panel.get_by_role("button", name="Apply scaling").click()
    expect(page.locator(".toast")).to_contain_text("Scaling changed")
    after = ui_server.api.get(f"/api/v1/deployments/{record['deploy_id']}").json()
    scaling = after["metadata"]["scaling"]
    assert (scaling["min_replicas"], scaling["max_replicas"]) == (1, 2)
    assert scaling["target_concurrency"] == 8
