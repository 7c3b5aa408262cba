"""Asking for more than the server gives one cell: memory or CPUs above its ceilings, or
network egress it does not allow, is refused at upload (422 naming the setting) and
leaves nothing behind; what a recorded deployment asked is held to today's limits again
when its cell starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deployserver.config import Settings
from deployserver.control import cellspec
from deployserver.control.decide import Wanted
from deployserver.domain import DeploymentStatus, DesiredState
from deployserver.upload.metadata import DeploymentMetadata
from tests.helpers import (
    assert_refused_and_untouched,
    multipart,
    package_files,
    upload_server,
)


@pytest.mark.parametrize(
    ("metadata", "code", "words"),
    [
        (
            {"resources": {"memory": "999999g"}},
            "resources_above_ceiling",
            "ceiling of '16g' (DEPLOYSERVER_MAX_CELL_MEMORY)",
        ),
        (
            {"resources": {"memory": "16.5g"}},
            "resources_above_ceiling",
            "DEPLOYSERVER_MAX_CELL_MEMORY",
        ),
        (
            {"resources": {"cpus": 4.5}},
            "resources_above_ceiling",
            "ceiling of 4 (DEPLOYSERVER_MAX_CELL_CPUS)",
        ),
        ({"network": {"egress": True}}, "egress_not_allowed", "DEPLOYSERVER_ALLOW_EGRESS"),
    ],
)
def test_asking_above_the_server_limits_is_refused_at_upload(
    tmp_path: Path, database_url: str, metadata: dict[str, Any], code: str, words: str
) -> None:
    with upload_server(tmp_path, database_url, max_cell_cpus=4) as (client, app):
        assert_refused_and_untouched(
            client,
            app,
            tmp_path / "data",
            {"files": multipart({"model": "greedy", **metadata}, package_files())},
            422,
            code,
            words,
        )


def test_the_network_field_takes_egress_only(tmp_path: Path, database_url: str) -> None:
    with upload_server(tmp_path, database_url, allow_egress=True) as (client, app):
        assert_refused_and_untouched(
            client,
            app,
            tmp_path / "data",
            {"files": multipart({"model": "x", "network": {"mode": "host"}}, package_files())},
            422,
            "invalid_metadata",
            "network.mode",
        )


def test_within_the_limits_is_accepted(tmp_path: Path, database_url: str) -> None:
    limits = {"max_cell_memory": "2g", "max_cell_cpus": 2, "allow_egress": True}
    metadata = {
        "model": "modest",
        "resources": {"memory": "2g", "cpus": 2},
        "network": {"egress": True},
    }
    with upload_server(tmp_path, database_url, **limits) as (client, _app):
        resp = client.post(
            "/api/v1/deployments",
            params={"start": "false"},
            files=multipart(metadata, package_files()),
        )
    assert resp.status_code == 202, resp.text
    assert resp.json()["metadata"]["network"] == {"egress": True}


def _wanted(meta: dict[str, Any]) -> Wanted:
    return Wanted(
        deploy_id="a" * 24,
        model="m",
        version=1,
        status=DeploymentStatus.RECEIVED,
        desired_state=DesiredState.RUNNING,
        restart_requested=False,
        cell_id=None,
        crashes=0,
        entrypoint="score.py:Model",
        meta=DeploymentMetadata.of({"model": "m", **meta}),
    )


def test_a_start_holds_a_recorded_deployment_to_todays_limits(tmp_path: Path) -> None:
    """Limits lowered, or egress turned off, after the upload: the next cell gets no more."""
    meta = {"resources": {"memory": "8g", "cpus": 3}, "network": {"egress": True}}
    generous = Settings(data_dir=tmp_path, max_cell_cpus=4, allow_egress=True)
    spec = cellspec.spec_for(generous, _wanted(meta))
    assert (spec.memory, spec.cpus, spec.egress) == ("8g", 3, True)

    strict = Settings(data_dir=tmp_path, max_cell_memory="2g", max_cell_cpus=1)
    spec = cellspec.spec_for(strict, _wanted(meta))
    assert (spec.memory, spec.cpus, spec.egress) == ("2g", 1, False)


def test_the_default_ceilings_suit_a_shared_host() -> None:
    import os

    settings = Settings()
    assert settings.max_cell_memory == "16g"
    assert settings.max_cell_cpus == os.cpu_count()
    assert settings.allow_egress is False
