"""Model names leaking through ``/metrics``: its labels name every model that served a
request, private ones included, and it answered anyone. It now needs a token with the
``read`` scope, unless the operator opens it with ``DEPLOYSERVER_METRICS_PUBLIC=true``."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.helpers import bearer, multipart, package_files, server_process

SECRET_MODEL = "secret-merger-model"


def _expose(url: str, token: str) -> None:
    """A private model that served (tried to serve) one request, so metrics name it."""
    with httpx.Client(base_url=url, headers=bearer(token), timeout=60) as api:
        resp = api.post(
            "/api/v1/deployments",
            params={"start": "false"},
            files=multipart({"model": SECRET_MODEL}, package_files()),
        )
        assert resp.status_code == 202, resp.text
        assert api.post(f"/serve/{SECRET_MODEL}/predict", json=[1]).status_code == 503
        assert SECRET_MODEL in api.get("/metrics").text


@pytest.mark.slow
def test_metrics_need_a_read_token_by_default(tmp_path: Path) -> None:
    env = {"DEPLOYSERVER_RUNTIME": "process"}
    with server_process(tmp_path / "data", env) as (url, _proc, token):
        _expose(url, token)
        anonymous = httpx.get(f"{url}/metrics")
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["code"] == "not_authenticated"
        assert SECRET_MODEL not in anonymous.text
        minted = httpx.post(
            f"{url}/api/v1/tokens",
            json={"name": "predictor", "scopes": ["predict"]},
            headers=bearer(token),
        ).json()["token"]
        wrong_scope = httpx.get(f"{url}/metrics", headers=bearer(minted))
        assert wrong_scope.status_code == 403 and SECRET_MODEL not in wrong_scope.text
        reader = httpx.post(
            f"{url}/api/v1/tokens",
            json={"name": "prometheus", "scopes": ["read"]},
            headers=bearer(token),
        ).json()["token"]
        scraped = httpx.get(f"{url}/metrics", headers=bearer(reader))
        assert scraped.status_code == 200 and SECRET_MODEL in scraped.text


@pytest.mark.slow
def test_metrics_public_opens_them_to_anyone(tmp_path: Path) -> None:
    env = {"DEPLOYSERVER_RUNTIME": "process", "DEPLOYSERVER_METRICS_PUBLIC": "true"}
    with server_process(tmp_path / "data", env) as (url, _proc, token):
        _expose(url, token)
        anonymous = httpx.get(f"{url}/metrics")
        assert anonymous.status_code == 200 and SECRET_MODEL in anonymous.text
        # only /metrics: the rest still needs a token
        assert httpx.get(f"{url}/api/v1/models").status_code == 401
