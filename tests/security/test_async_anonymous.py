"""Anonymous callers of a public model queueing asynchronous predictions, which the server
keeps (requests, results) and works on: off by default, a token with the 'predict' scope
is needed; DEPLOYSERVER_ASYNC_ANONYMOUS=true opens them."""

from __future__ import annotations

import httpx
import pytest

from deployserver.config import Settings
from tests.helpers import bearer
from tests.lifecycle.conftest import Rig
from tests.lifecycle.test_async_predictions import REAL, _deploy, _until_done


@pytest.fixture
def lifecycle_settings(lifecycle_settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """The rig's settings, with what a test passes by indirect parametrisation."""
    return lifecycle_settings.model_copy(update=getattr(request, "param", {}))


def _mint(api: httpx.Client, name: str, *scopes: str) -> dict[str, str]:
    made = api.post("/api/v1/tokens", json={"name": name, "scopes": list(scopes)})
    assert made.status_code == 201, made.text
    return bearer(made.json()["token"])


@pytest.mark.slow
@REAL
def test_anonymous_async_on_a_public_model_needs_a_token_by_default(rig: Rig) -> None:
    _deploy(rig.api, "good", "open", public=True)
    mine = rig.api.post("/api/v1/models/open/predictions", json={"inputs": 1}).json()
    with httpx.Client(base_url=str(rig.api.base_url), timeout=30) as anon:
        assert anon.post("/serve/open/predict", json={"inputs": 1}).status_code == 200
        for resp in (
            anon.post("/api/v1/models/open/predictions", json={"inputs": 1}),
            anon.get(f"/api/v1/predictions/{mine['request_id']}"),
            anon.delete(f"/api/v1/predictions/{mine['request_id']}"),
        ):
            assert resp.status_code == 401, resp.text
            assert resp.headers["www-authenticate"] == "Bearer"
            error = resp.json()["error"]
            assert error["code"] == "not_authenticated"
            assert "DEPLOYSERVER_ASYNC_ANONYMOUS" in error["message"]
        predictor = _mint(rig.api, "caller", "predict")
        queued = anon.post("/api/v1/models/open/predictions", json={"inputs": 2}, headers=predictor)
        assert queued.status_code == 202, queued.text
    assert _until_done(rig.api, queued.json()["request_id"])["status"] == "succeeded"


@pytest.mark.slow
@pytest.mark.parametrize("runtime_kind", ["process"], indirect=True)
@pytest.mark.parametrize("lifecycle_settings", [{"async_anonymous": True}], indirect=True)
def test_anonymous_async_works_when_the_setting_opens_it(rig: Rig) -> None:
    _deploy(rig.api, "good", "open", public=True)
    _deploy(rig.api, "good", "closed")
    with httpx.Client(base_url=str(rig.api.base_url), timeout=30) as anon:
        queued = anon.post("/api/v1/models/open/predictions", json={"inputs": 3})
        assert queued.status_code == 202, queued.text
        done = _until_done(anon, queued.json()["request_id"])
        assert done["status"] == "succeeded" and done["result"]["echo"] == 3
        assert anon.post("/api/v1/models/closed/predictions", json=1).status_code == 401
