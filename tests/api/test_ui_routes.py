"""The web UI's routes over HTTP: the shell and its files with their content types, cache
headers and Content-Security-Policy; / for a browser; the metadata schema the upload form
checks against, and that it says what the server's own validation says."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from deployserver.ui.assets import STATIC_DIR
from deployserver.upload.metadata import DeploymentMetadata
from tests.helpers import ADMIN_TOKEN, bearer

CSP_MUST = (
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "frame-ancestors 'none'",
    "object-src 'none'",
    "require-trusted-types-for 'script'",
)


def _version(anon: httpx.Client) -> str:
    found = re.search(r"/ui/static/([0-9a-f]+)/app\.js", anon.get("/ui").text)
    assert found, "the shell names its script"
    return found.group(1)


def test_the_shell_is_one_page_under_a_strict_policy(anon: httpx.Client) -> None:
    for path in ("/ui", "/ui/models", "/ui/models/iris/try", "/ui/deployments/abc"):
        resp = anon.get(path)
        assert resp.status_code == 200, path
        assert resp.headers["content-type"] == "text/html; charset=utf-8"
        csp = resp.headers["content-security-policy"]
        for directive in CSP_MUST:
            assert directive in csp, (directive, csp)
        assert "unsafe" not in csp
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert resp.headers["x-frame-options"] == "DENY"
        assert resp.headers["cache-control"] == "no-cache"
        assert "set-cookie" not in resp.headers
    page = anon.get("/ui").text
    # no inline script or style: every script has a src, no <style>, no style attribute
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", page) == []
    assert "<style" not in page and " style=" not in page
    again = anon.get("/ui", headers={"If-None-Match": anon.get("/ui").headers["etag"]})
    assert again.status_code == 304 and again.content == b""


def test_a_browser_asking_for_the_root_is_sent_to_the_ui(anon: httpx.Client) -> None:
    resp = anon.get("/", headers={"Accept": "text/html,application/xhtml+xml"})
    assert resp.status_code == 303 and resp.headers["location"] == "/ui"
    resp = anon.get("/", headers={"Accept": "application/json"})
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"


TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


def test_static_files_have_their_types_and_are_cached_by_version(anon: httpx.Client) -> None:
    version = _version(anon)
    names = [p.relative_to(STATIC_DIR).as_posix() for p in STATIC_DIR.rglob("*") if p.is_file()]
    assert "app.js" in names and "pages/upload.js" in names
    for name in names:
        resp = anon.get(f"/ui/static/{version}/{name}")
        assert resp.status_code == 200, name
        suffix = Path(name).suffix
        assert resp.headers["content-type"] == TYPES.get(suffix, "image/svg+xml"), name
        assert resp.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert resp.content == (STATIC_DIR / name).read_bytes()
    for bad in (f"/ui/static/{'0' * 16}/app.js", f"/ui/static/{version}/nope.js"):
        resp = anon.get(bad)  # an older version is not served as this one
        assert resp.status_code == 404, bad
        assert resp.json()["error"]["code"] == "not_found"
    shell = anon.get("/ui").content
    for bad in (
        f"/ui/static/{version}/../assets.py",
        f"/ui/static/{version}/%2e%2e/assets.py",
        f"/ui/static/{version}/pages/..%2f..%2fshell.html",
        f"/ui/static/{version}/pages/%2e%2e%2f%2e%2e%2f__init__.py",
    ):
        resp = anon.get(bad)  # files are looked up by name in memory: nothing else is read
        assert resp.status_code == 404 or resp.content == shell, bad


def test_the_scripts_build_nodes_never_markup_or_inline_style() -> None:
    """What the CSP enforces in the browser, checked in the sources too."""
    sinks = re.compile(
        r"innerHTML|outerHTML\s*=|insertAdjacentHTML|document\.write|\beval\(|new Function|"
        r"setAttribute\(\s*['\"]style|\.style\.|\bstyle:"
    )
    for path in STATIC_DIR.rglob("*.js"):
        found = [line for line in path.read_text().splitlines() if sinks.search(line)]
        assert found == [], (path.name, found)
    for path in STATIC_DIR.rglob("*.css"):
        assert "@import" not in path.read_text() and "url(http" not in path.read_text()


def _keywords(schema: Any, found: set[str]) -> set[str]:
    if isinstance(schema, dict):
        for key, value in schema.items():
            found.add(key)
            if key in ("properties", "$defs"):
                for sub in value.values():
                    _keywords(sub, found)
            elif key not in ("default", "enum", "const", "required", "description", "title"):
                _keywords(value, found)
    elif isinstance(schema, list):
        for item in schema:
            _keywords(item, found)
    return found


def test_the_metadata_schema_is_the_servers_and_the_form_checks_every_keyword_of_it(
    anon: httpx.Client,
) -> None:
    version = _version(anon)
    served = anon.get(f"/ui/static/{version}/metadata.schema.json")
    assert served.status_code == 200
    assert served.headers["content-type"] == "application/json"
    assert served.json() == json.loads(json.dumps(DeploymentMetadata.model_json_schema()))
    source = (STATIC_DIR / "validate.js").read_text()
    listed = re.search(r"export const KEYWORDS = \[(.*?)\];", source, re.S)
    assert listed is not None
    known = set(re.findall(r'"([$\w]+)"', listed.group(1)))
    used = _keywords(served.json(), set())
    assert used <= known, f"validate.js does not check {sorted(used - known)}"


CASES: list[tuple[dict[str, Any], bool]] = [
    ({"model": "iris"}, True),
    ({"model": "Iris"}, False),
    ({"model": "iris", "resources": {"memory": "512m"}}, True),
    ({"model": "iris", "resources": {"memory": "2Gi"}}, True),
    ({"model": "iris", "resources": {"memory": "1.5GB"}}, True),
    ({"model": "iris", "resources": {"memory": "lots"}}, False),
    ({"model": "iris", "resources": {"memory": "0m"}}, False),
    ({"model": "iris", "env": {"API_KEY": "x"}}, True),
    ({"model": "iris", "env": {"1BAD": "x"}}, False),
    ({"model": "iris", "env": {"has-dash": "x"}}, False),
    ({"model": "iris", "requirements": ["numpy==2.0"]}, True),
    ({"model": "iris", "requirements": ["  "]}, False),
    ({"model": "iris", "requirements": ["a\nb"]}, False),
    ({"model": "iris", "entrypoint": "score.py:Model"}, True),
    ({"model": "iris", "entrypoint": "src/pkg/model.py:Scorer"}, True),
    ({"model": "iris", "entrypoint": "/abs/score.py:Model"}, False),
    ({"model": "iris", "entrypoint": "../up.py:Model"}, False),
    ({"model": "iris", "entrypoint": "a/../up.py:Model"}, False),
    ({"model": "iris", "entrypoint": "score.py"}, False),
    ({"model": "iris", "entrypoint": "score.txt:Model"}, False),
    ({"model": "iris", "entrypoint": "score.py:9Model"}, False),
    ({"model": "iris", "entrypoint": "win\\score.py:Model"}, False),
]


def _pattern_ok(schema: dict[str, Any], meta: dict[str, Any]) -> bool:
    """The published patterns alone, as the browser applies them (re and JS agree on
    these: anchors, classes, lookaheads)."""
    props = schema["properties"]
    memory = schema["$defs"]["Resources"]["properties"]["memory"]["pattern"]
    checks = [re.search(props["model"]["pattern"], meta["model"]) is not None]
    if "memory" in meta.get("resources", {}):
        checks.append(re.search(memory, meta["resources"]["memory"]) is not None)
    for key in meta.get("env", {}):
        checks.append(re.search(props["env"]["propertyNames"]["pattern"], key) is not None)
    for req in meta.get("requirements", []):
        checks.append(re.search(props["requirements"]["items"]["pattern"], req) is not None)
    if "entrypoint" in meta:
        checks.append(re.search(props["entrypoint"]["pattern"], meta["entrypoint"]) is not None)
    return all(checks)


@pytest.mark.parametrize(("meta", "valid"), CASES)
def test_the_published_patterns_say_what_the_server_says(meta: dict[str, Any], valid: bool) -> None:
    try:
        DeploymentMetadata.model_validate(meta)
        server = True
    except ValidationError:
        server = False
    assert server is valid
    assert _pattern_ok(DeploymentMetadata.model_json_schema(), meta) is valid


def test_whoami_names_the_token_and_its_scopes(api: httpx.Client, anon: httpx.Client) -> None:
    made = api.post("/api/v1/tokens", json={"name": "watcher", "scopes": ["predict"]}).json()
    me = anon.get("/api/v1/auth/me", headers=bearer(made["token"])).json()
    assert me == {
        "token_id": made["id"],
        "name": "watcher",
        "scopes": ["predict"],
        "expires_at": None,
    }
    assert anon.get("/api/v1/auth/me", headers=bearer(ADMIN_TOKEN)).json()["name"] == "admin"
    assert anon.get("/api/v1/auth/me").status_code == 401
