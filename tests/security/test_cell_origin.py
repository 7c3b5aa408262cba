"""Active content from a cell on the control plane's origin: a scoring script answers an
HTML page with a script in it, sets cookies (``Set-Cookie`` and ``Set-Cookie2``) and its own
``Content-Security-Policy``/``X-Content-Type-Options``. Through ``/serve`` no cookie is set,
the page is sandboxed and not sniffed, whatever the cell sent; and a cookie a cell sets is
never sent back to any cell by the server's own client."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from deployserver.serving.cellcall import cell_session
from tests.helpers import multipart, serve, wait_for_status
from tests.lifecycle import conftest as lifecycle
from tests.lifecycle.conftest import Rig

# the lifecycle suite's server on a real runtime (here: process cells, docker cells)
runtime_kind, lifecycle_settings, rig = (
    lifecycle.runtime_kind,
    lifecycle.lifecycle_settings,
    lifecycle.rig,
)

REAL_CELLS = pytest.mark.parametrize(
    "runtime_kind",
    ["process", pytest.param("docker", marks=[pytest.mark.docker, pytest.mark.slow])],
    indirect=True,
)

HOSTILE = b"""
from starlette.responses import HTMLResponse


class Model:
    def __init__(self, model_dir, **parameters):
        pass

    def load(self):
        pass

    def predict(self, inputs, **kwargs):
        page = HTMLResponse("<script>fetch('/api/v1/tokens')</script>")
        page.set_cookie("session", "planted", path="/")
        page.raw_headers += [
            (b"set-cookie2", b"legacy=planted"),
            (b"content-security-policy", b"default-src *"),
            (b"content-security-policy-report-only", b"default-src *"),
            (b"x-content-type-options", b"sniff-away"),
            (b"x-model-note", b"kept"),
        ]
        return page
"""

SANDBOX = "sandbox; default-src 'none'; frame-ancestors 'none'"


def _assert_sandboxed(resp: httpx.Response) -> None:
    names = [name.lower() for name, _ in resp.headers.raw]
    assert b"set-cookie" not in names and b"set-cookie2" not in names, resp.headers
    assert b"content-security-policy-report-only" not in names
    assert resp.headers.get_list("content-security-policy") == [SANDBOX]
    assert resp.headers.get_list("x-content-type-options") == ["nosniff"]
    assert not resp.cookies


@REAL_CELLS
def test_a_cell_cannot_set_cookies_or_serve_a_live_page(rig: Rig) -> None:
    files = {"score.py": HOSTILE}
    up = rig.api.post("/api/v1/deployments", files=multipart({"model": "hostile"}, files))
    record = wait_for_status(rig.api, up.json()["deploy_id"], {"ready", "failed"})
    assert record["status"] == "ready", record["status_reason"]

    resp = rig.api.post("/serve/hostile/predict", json=1)
    assert resp.status_code == 200, resp.text
    assert "<script>" in resp.text  # the page itself passes, as the cell wrote it ...
    assert resp.headers["content-type"].startswith("text/html")
    assert resp.headers["x-model-note"] == "kept"  # ... with the cell's harmless headers
    _assert_sandboxed(resp)  # ... but it sets nothing and runs nothing on our origin

    # the server's own answers under /serve carry the same guard
    missing = rig.api.get("/serve/nobody/predict")
    assert missing.status_code == 404
    _assert_sandboxed(missing)


async def test_the_server_never_hands_a_cells_cookie_to_a_cell() -> None:
    """The pooled client towards the cells keeps no cookies, even for a named host (a
    cookie jar accepts those, where it ignores bare IP addresses)."""
    seen: list[str | None] = []

    async def handle(request: Request) -> Response:
        seen.append(request.headers.get("cookie"))
        answer = JSONResponse({"ok": True})
        answer.set_cookie("planted", "by-a-cell", path="/")
        return answer

    app = Starlette(routes=[Route("/predict", handle, methods=["POST"])])
    with serve(app) as url:  # type: ignore[arg-type]
        named = url.replace("127.0.0.1", "localhost")
        session = cell_session(10)
        try:
            for _ in range(2):
                async with session.post(f"{named}/predict", data=b"{}") as resp:
                    assert resp.status == 200
        finally:
            await session.close()
    assert seen == [None, None]
