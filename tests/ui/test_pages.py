"""The web UI as a person uses it, in Chromium: sign in both ways (and the login limit),
upload a template folder and watch it become ready, try a prediction, a broken model's
reason and logs, the upload's progress, the metadata checked before sending, env values
never shown; every control labelled and reachable by keyboard."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import SCORE_PY, bearer, eventually
from tests.ui.conftest import (
    MODEL,
    TEMPLATE,
    UIServer,
    Watched,
    ensure_sentiment,
    expect,
    keyboard_walk,
    shoot,
    sign_in,
)

pytestmark = pytest.mark.slow


def test_sign_in_with_a_token_then_a_password_and_the_login_limit(
    watched: Watched, ui_server: UIServer
) -> None:
    page = watched.page
    watched.expected |= {400, 401, 429}  # a bad token, wrong passwords, the lockout
    api = ui_server.api
    assert api.post(
        "/api/v1/users", json={"name": "alice", "password": "correct horse", "scopes": ["read"]}
    ).status_code in (201, 409)
    # a browser asking for the root lands on the sign-in page
    page.goto("/")
    expect(page.get_by_role("heading", name="Sign in to deployserver")).to_be_visible()
    keyboard_walk(page)
    shoot(page, "signin")
    page.get_by_label("API token").fill("dst_0123456789abcdef_" + "x" * 43)
    page.get_by_role("button", name="Use this token").click()
    expect(page.get_by_role("alert")).to_contain_text("not accepted")
    sign_in(page, ui_server.token)
    expect(page.locator(".who")).to_have_text("admin")
    assert page.evaluate("() => document.cookie") == "", "no cookie holds the session"
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in to deployserver")).to_be_visible()
    assert page.evaluate("() => sessionStorage.length") == 0

    page.get_by_label("User name", exact=True).fill("alice")
    page.get_by_label("Password", exact=True).fill("correct horse")
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.locator(".who")).to_have_text("alice")
    # a read-only user sees no upload, no admin page
    expect(page.get_by_role("link", name="New deployment")).to_have_count(0)
    expect(page.get_by_role("link", name="Tokens & users")).to_have_count(0)
    token = page.evaluate("() => sessionStorage.getItem('deployserver.token')")
    page.get_by_role("button", name="Sign out").click()
    # a login's token is revoked by its sign-out; the admin's pasted one was not, above

    def revoked() -> bool:
        me = httpx.get(f"{ui_server.url}/api/v1/auth/me", headers=bearer(token), timeout=10)
        return me.status_code == 401 and "revoked" in me.json()["error"]["message"]

    eventually(revoked, what="alice's token revoked")
    assert api.get("/api/v1/auth/me").status_code == 200

    # wrong passwords: told so; then the name is locked and the person told when to retry
    for _ in range(2):
        page.get_by_label("User name", exact=True).fill("bob")
        page.get_by_label("Password", exact=True).fill("not the password")
        page.get_by_role("button", name="Sign in", exact=True).click()
        expect(page.get_by_role("alert")).to_contain_text("wrong")
    page.get_by_role("button", name="Sign in", exact=True).click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Too many sign-in attempts")
    expect(alert).to_contain_text(re.compile(r"try again in \d+ s"))
    expect(page.get_by_role("button", name="Sign in", exact=True)).to_be_disabled()


def test_upload_the_template_folder_and_watch_it_become_ready(
    page: Any, ui_server: UIServer
) -> None:
    sign_in(page, ui_server.token, "/ui/new")
    keyboard_walk(page)
    shoot(page, "new-deployment")
    page.locator("#pick-folder").set_input_files(str(TEMPLATE))
    # the folder's metadata.json fills the form, and is not sent as a file
    expect(page.get_by_label("Model name")).to_have_value(MODEL)
    expect(page.locator(".file-list")).to_contain_text("score.py")
    expect(page.locator(".file-list table")).not_to_contain_text("metadata.json")
    expect(page.locator(".upload-form")).to_contain_text("input_spec, output_spec")
    page.get_by_role("button", name="Upload and deploy").click()
    page.wait_for_url(re.compile(r"/ui/deployments/[0-9a-f]+\?new=1"))
    # followed live: the status turns ready without a reload
    expect(page.locator(".state .badge")).to_have_text("ready", timeout=120_000)
    expect(page.locator(".state")).to_contain_text("Ready and active")
    expect(page.locator(".timeline")).to_contain_text("activated")
    expect(page.locator(".timeline")).to_contain_text("by admin")
    expect(page.get_by_label("Cell output")).to_contain_text("positive and")
    digest = hashlib.sha256((TEMPLATE / "score.py").read_bytes()).hexdigest()
    expect(page.locator(f"code[title='{digest}']")).to_be_visible()
    keyboard_walk(page)
    shoot(page, "deployment")


def test_try_a_prediction_and_copy_its_curl(page: Any, ui_server: UIServer) -> None:
    ensure_sentiment(ui_server)
    sign_in(page, ui_server.token, f"/ui/models/{MODEL}/try")
    body = page.get_by_label("Request body (JSON)")
    expect(body).to_have_value(re.compile(r'"text"'))  # an example from its input_spec
    body.fill('{"text": "What a lovely, wonderful day"}')
    page.get_by_role("button", name="Send").click()
    answer = page.locator("section").filter(has=page.get_by_role("heading", name="Answer"))
    expect(answer.locator(".answer-status")).to_have_text("200 OK")
    expect(answer).to_contain_text('"label": "positive"')
    expect(answer.locator(".answer-latency")).to_have_text(re.compile(r"^\d+ ms$"))
    curl = page.locator(".curl").inner_text()
    assert f"{ui_server.url}/serve/{MODEL}/predict" in curl
    assert "$DEPLOYSERVER_TOKEN" in curl and ui_server.token not in curl
    assert '{"text":"What a lovely, wonderful day"}' in curl
    keyboard_walk(page)
    shoot(page, "try")
    # the same request from a shell gets the same answer
    args = json.loads('{"text": "What a lovely, wonderful day"}')
    direct = httpx.post(
        f"{ui_server.url}/serve/{MODEL}/predict", json=args, headers=bearer(ui_server.token)
    )
    assert direct.json()["predictions"]["label"] == "positive"

    # the models page counts those requests, from the server's /metrics
    page.get_by_role("link", name="Models", exact=True).click()
    row = page.locator("tr").filter(has=page.get_by_role("link", name=MODEL))
    expect(row.locator("td[data-label='Status']")).to_have_text("ready")
    expect(row.locator("td[data-label='Requests']")).to_have_text(re.compile(r"^[1-9]\d*$"))
    expect(row.locator("td[data-label='Mean latency']")).to_have_text(re.compile(r"ms$"))
    keyboard_walk(page)
    shoot(page, "models")
    page.get_by_label("Filter models").fill("no-such-model")
    expect(page.locator(".empty")).to_contain_text("No model matches")
    page.get_by_label("Filter models").fill("senti")
    expect(page.get_by_role("link", name=MODEL)).to_be_visible()


BROKEN_SCORE = b"""class Model:
    def __init__(self, model_dir, **parameters):
        pass

    def load(self):
        print("opening weights/model.bin", flush=True)
        raise ValueError("weights are corrupt: checksum mismatch")

    def predict(self, inputs, **kwargs):
        return inputs
"""


def test_a_broken_model_shows_its_reason_and_last_log_lines(
    page: Any, ui_server: UIServer, tmp_path: Path
) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "score.py").write_bytes(BROKEN_SCORE)
    sign_in(page, ui_server.token, "/ui/new")
    page.locator("#pick-files").set_input_files([str(folder / "score.py")])
    page.get_by_label("Model name").fill("broken-model")
    page.get_by_role("button", name="Upload and deploy").click()
    page.wait_for_url(re.compile(r"/ui/deployments/"))
    expect(page.locator(".state .badge")).to_have_text("failed", timeout=120_000)
    reason = page.locator(".reason-box").filter(has_text="Why it failed")
    expect(reason).to_contain_text("weights are corrupt: checksum mismatch")
    last = page.locator(".reason-box").filter(has_text="Last log lines")
    expect(last).to_contain_text("ValueError: weights are corrupt")
    expect(page.get_by_label("Cell output")).to_contain_text("opening weights/model.bin")
    shoot(page, "deployment-failed")


def test_the_upload_shows_bytes_speed_and_time_left(
    page: Any, ui_server: UIServer, tmp_path: Path
) -> None:
    (tmp_path / "score.py").write_bytes(SCORE_PY)
    (tmp_path / "weights.bin").write_bytes(os.urandom(3_000_000))
    sign_in(page, ui_server.token, "/ui/new")
    page.locator("#pick-files").set_input_files(
        [str(tmp_path / "score.py"), str(tmp_path / "weights.bin")]
    )
    page.get_by_label("Model name").fill("heavy-model")
    page.get_by_label("Start it now").uncheck()
    # the browser's own throttle: 1 MB/s up, so the upload is seen on its way
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 1e6},
    )
    page.get_by_role("button", name="Upload and deploy").click()
    text = page.locator(".progress-text")
    on_its_way = r"^[\d.]+ [kM]?B of 3\.00 MB · [\d.]+ [kM]?B/s · .+ left$"
    expect(text).to_have_text(re.compile(on_its_way))
    bar = page.get_by_role("progressbar", name="Upload progress")
    assert 0 < bar.evaluate("b => b.value") <= bar.evaluate("b => b.max")
    page.wait_for_url(re.compile(r"/ui/deployments/[0-9a-f]+\?new=1"))
    expect(page.locator(".state .badge")).to_have_text("received")
    expect(page.locator(".state")).to_contain_text("Received")


def test_the_metadata_is_checked_before_anything_is_sent(
    page: Any, ui_server: UIServer, tmp_path: Path
) -> None:
    (tmp_path / "score.py").write_bytes(BROKEN_SCORE)
    sign_in(page, ui_server.token, "/ui/new")
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if r.method == "POST" else None)
    page.locator("#pick-files").set_input_files([str(tmp_path / "score.py")])
    page.get_by_label("Model name").fill("Not A Name")
    page.get_by_label("Memory").fill("lots")
    page.get_by_label("Parameters").fill("{oops")
    page.get_by_role("button", name="Add a variable").click()
    page.get_by_label("Variable name").fill("1BAD")
    page.get_by_role("button", name="Upload and deploy").click()
    expect(page.get_by_label("Model name")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Model name")).to_be_focused()
    form = page.locator(".upload-form")
    expect(form).to_contain_text("Model name must be lower-case letters")
    expect(form).to_contain_text("Memory must look like 512m")
    expect(form).to_contain_text("Parameters is not JSON")
    expect(form).to_contain_text('"1BAD" must be a variable name')
    assert sent == [], "nothing was sent"
    shoot(page, "new-deployment-errors")


def test_env_values_are_never_shown(page: Any, ui_server: UIServer, tmp_path: Path) -> None:
    secret = "s3cret-value-never-on-screen"
    (tmp_path / "score.py").write_bytes(BROKEN_SCORE)
    (tmp_path / "metadata.json").write_text(
        json.dumps({"model": "with-secrets", "env": {"API_KEY": secret}})
    )
    up = httpx.post(
        f"{ui_server.url}/api/v1/deployments?start=false",
        headers=bearer(ui_server.token),
        files=[
            ("metadata", ("metadata.json", (tmp_path / "metadata.json").read_bytes())),
            ("files", ("score.py", BROKEN_SCORE)),
        ],
    )
    assert up.status_code == 202, up.text
    # the admin's token may read the value over the API; the UI still never shows it
    sign_in(page, ui_server.token, f"/ui/deployments/{up.json()['deploy_id']}")
    meta = page.locator("section").filter(has=page.get_by_role("heading", name="Metadata"))
    expect(meta).to_contain_text("values are never shown here")
    expect(meta.locator("code", has_text="API_KEY")).to_be_visible()
    assert secret not in page.content()
    assert secret not in page.evaluate("() => document.body.innerText")
