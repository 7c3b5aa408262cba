"""Metadata ``scaling`` and PUT /deployments/{id}/scaling: checked with clear 422s,
bounded by the server's ceilings, applied live, recorded as an event."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.helpers import db_snapshot, multipart, package_files


def _upload(api: httpx.Client, **meta: Any) -> httpx.Response:
    metadata = {"model": "scaled", **meta}
    return api.post("/api/v1/deployments?start=false", files=multipart(metadata, package_files()))


def test_defaults_keep_one_replica(api: httpx.Client) -> None:
    record = _upload(api).json()
    assert record["metadata"]["scaling"] == {
        "min_replicas": 1,
        "max_replicas": 1,
        "target_concurrency": 4.0,
        "idle_seconds": 300.0,
        "resend_dropped": True,
    }
    # not started: nothing wanted yet
    assert record["replicas"] == {"desired": 0, "ready": 0, "tier": "stopped", "cells": []}


def test_max_defaults_to_min(api: httpx.Client) -> None:
    assert (
        _upload(api, scaling={"min_replicas": 3}).json()["metadata"]["scaling"]["max_replicas"] == 3
    )
    assert (
        _upload(api, scaling={"min_replicas": 0}).json()["metadata"]["scaling"]["max_replicas"] == 1
    )


@pytest.mark.parametrize(
    ("scaling", "words"),
    [
        ({"min_replicas": 3, "max_replicas": 2}, "max_replicas (2) is below min_replicas (3)"),
        ({"min_replicas": 0, "max_replicas": 0}, "max_replicas must be at least 1"),
        ({"min_replicas": -1}, "scaling.min_replicas"),
        ({"min_replicas": "2"}, "scaling.min_replicas"),
        ({"target_concurrency": 0}, "scaling.target_concurrency"),
        ({"idle_seconds": -5}, "scaling.idle_seconds"),
        ({"resend_dropped": "no"}, "scaling.resend_dropped"),
        ({"replicas": 2}, "scaling.replicas"),
        ("three", "scaling"),
    ],
)
def test_bad_scaling_is_refused_with_the_reason(
    api: httpx.Client, app: Any, scaling: Any, words: str
) -> None:
    before = db_snapshot(app)
    resp = _upload(api, scaling=scaling)
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["code"] == "invalid_metadata" and words in error["message"], error
    assert db_snapshot(app) == before


def test_the_servers_ceilings_apply(api: httpx.Client) -> None:
    too_many = _upload(api, scaling={"max_replicas": 17})
    assert too_many.status_code == 422
    assert too_many.json()["error"]["code"] == "resources_above_ceiling"
    assert "DEPLOYSERVER_MAX_REPLICAS" in too_many.json()["error"]["message"]
    too_quick = _upload(api, scaling={"min_replicas": 0, "idle_seconds": 0.1})
    assert too_quick.status_code == 422
    assert "DEPLOYSERVER_MIN_IDLE_SECONDS" in too_quick.json()["error"]["message"]


def test_put_scaling_changes_it_live_and_says_so(api: httpx.Client) -> None:
    deploy_id = _upload(api).json()["deploy_id"]
    url = f"/api/v1/deployments/{deploy_id}/scaling"
    body = {"max_replicas": 4, "target_concurrency": 2, "resend_dropped": False}
    resp = api.put(url, json=body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["metadata"]["scaling"] == {
        "min_replicas": 1,
        "max_replicas": 4,
        "target_concurrency": 2.0,
        "idle_seconds": 300.0,
        "resend_dropped": False,
    }
    # a min above the current max lifts the max with it
    raised = api.put(url, json={"min_replicas": 6}).json()["metadata"]["scaling"]
    assert (raised["min_replicas"], raised["max_replicas"]) == (6, 6)
    events = api.get(f"/api/v1/deployments/{deploy_id}/events").json()
    changes = [e for e in events if e["kind"] == "scaling_changed"]
    assert changes[-1]["message"].startswith("scaling: 6 to 6 replicas")
    assert changes[-1]["actor"] == "admin"
    assert api.get(f"/api/v1/deployments/{deploy_id}").json()["metadata"]["scaling"] == raised


@pytest.mark.parametrize(
    ("body", "status", "code", "words"),
    [
        ({"min_replicas": 3, "max_replicas": 2}, 422, "invalid_scaling", "below min_replicas"),
        ({"max_replicas": 100}, 422, "resources_above_ceiling", "DEPLOYSERVER_MAX_REPLICAS"),
        ({"max_replicas": 0}, 422, "validation_error", "max_replicas"),
        ({"min_replicas": "many"}, 422, "validation_error", "min_replicas"),
        ({"replicas": 3}, 422, "validation_error", "replicas"),
        ({"resend_dropped": 0}, 422, "validation_error", "resend_dropped"),
        ([1, 2], 422, "validation_error", ""),
    ],
)
def test_put_scaling_refuses_bad_input(
    api: httpx.Client, body: Any, status: int, code: str, words: str
) -> None:
    deploy_id = _upload(api).json()["deploy_id"]
    resp = api.put(f"/api/v1/deployments/{deploy_id}/scaling", json=body)
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["code"] == code and words in resp.json()["error"]["message"]
    kept = api.get(f"/api/v1/deployments/{deploy_id}").json()["metadata"]["scaling"]
    assert kept["max_replicas"] == 1


def test_put_scaling_of_an_unknown_deployment_is_404(api: httpx.Client) -> None:
    resp = api.put("/api/v1/deployments/nope/scaling", json={"max_replicas": 2})
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "deployment_not_found"
