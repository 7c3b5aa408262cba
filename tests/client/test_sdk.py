"""The Python SDK against a real server with real (process) cells."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployserver.client.errors import (
    DeployServerAPIError,
    NotFound,
    ServerUnreachable,
    Unauthorized,
    UnprocessableEntity,
)
from deployserver.client.sdk import DeployClient
from tests.cli.conftest import TEMPLATES, Server, broken_package, checkout_env, write_package
from tests.helpers import SCORE_PY, eventually, free_port


@pytest.fixture(scope="module")
def python_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("pkg") / "python"
    shutil.copytree(TEMPLATES / "python", target)
    return target


@pytest.fixture
def ds(server: Server) -> Iterator[DeployClient]:
    with DeployClient(server.url, server.token) as client:
        yield client


def test_push_wait_get_list_logs(ds: DeployClient, python_template: Path) -> None:
    sent: list[tuple[int, int]] = []
    up = ds.push(python_template, model="sdk-basic", progress=lambda s, t: sent.append((s, t)))
    assert up.model == "sdk-basic" and up.version == 1 and up.status == "received"
    assert sorted(f.path for f in up.files) == [
        "README.md",
        "request.json",
        "score.py",
        "words.json",
    ]
    assert sent and sent[-1][0] == sent[-1][1]  # the callback saw every byte go
    seen: list[str] = []
    record = ds.wait(up.deploy_id, on_status=lambda r: seen.append(r.status))
    assert record.status == "ready" and record.active and seen[-1] == "ready"
    assert ds.get(up.deploy_id).cell is not None
    assert [d.deploy_id for d in ds.list(model="sdk-basic")] == [up.deploy_id]
    assert up.deploy_id in {d.deploy_id for d in ds.iter_deployments(limit=1000)}
    assert "loaded" in ds.logs(up.deploy_id, tail=50)
    assert "sdk-basic" in {m.name for m in ds.models()}
    assert [e.kind for e in ds.events(up.deploy_id)][:3] == ["received", "starting", "ready"]


def test_stop_start_restart_delete(ds: DeployClient, tmp_path: Path) -> None:
    folder = write_package(tmp_path / "pkg", {"model": "sdk-cycle"}, {"score.py": SCORE_PY})
    up = ds.push(folder)
    first = ds.wait(up.deploy_id)
    assert first.status == "ready"
    assert ds.stop(up.deploy_id).desired_state == "stopped"
    assert ds.wait(up.deploy_id).status == "stopped"
    assert ds.start(up.deploy_id).desired_state == "running"
    again = ds.wait(up.deploy_id)
    assert again.status == "ready"
    ds.restart(up.deploy_id)
    assert again.cell is not None
    eventually(
        lambda: (r := ds.get(up.deploy_id)).status == "ready" and r.cell.id != again.cell.id,  # type: ignore[union-attr]
        what="a new ready cell",
    )
    ds.delete(up.deploy_id)
    with pytest.raises(NotFound) as caught:
        ds.get(up.deploy_id)
    assert caught.value.code == "deployment_not_found"


def test_rollback_makes_the_old_version_active(ds: DeployClient, tmp_path: Path) -> None:
    first = ds.push(write_package(tmp_path / "v1", {"model": "sdk-roll"}, {"score.py": SCORE_PY}))
    ds.wait(first.deploy_id)
    second = ds.push(write_package(tmp_path / "v2", {"model": "sdk-roll"}, {"score.py": SCORE_PY}))
    assert ds.wait(second.deploy_id).active
    assert ds.rollback("sdk-roll", version=1).deploy_id == first.deploy_id
    eventually(lambda: ds.model("sdk-roll").active_deploy_id == first.deploy_id, what="rolled back")


def test_failed_load_is_reported_with_its_reason(ds: DeployClient, tmp_path: Path) -> None:
    up = ds.push(broken_package(tmp_path / "broken", "sdk-broken"))
    record = ds.wait(up.deploy_id)
    assert record.status == "failed"
    assert "ValueError: weights are corrupt" in (record.status_reason or "")


def test_errors_carry_the_server_code_and_message(
    ds: DeployClient, server: Server, tmp_path: Path
) -> None:
    with pytest.raises(NotFound) as missing:
        ds.get("0123456789abcdef01234567")
    assert missing.value.status == 404 and missing.value.code == "deployment_not_found"
    assert "0123456789abcdef01234567" in missing.value.message
    assert "NotFound(404, 'deployment_not_found'" in repr(missing.value)

    no_script = write_package(tmp_path / "none", {"model": "sdk-none"}, {"data.txt": b"x"})
    with pytest.raises(UnprocessableEntity) as refused:
        ds.push(no_script)
    assert refused.value.status == 422 and refused.value.code == "no_scoring_script"
    assert isinstance(refused.value, DeployServerAPIError) and refused.value.message

    with (
        DeployClient(server.url, "not-a-valid-token") as stranger,
        pytest.raises(Unauthorized) as denied,
    ):
        stranger.list()
    assert denied.value.code == "not_authenticated"

    with (
        DeployClient(f"http://127.0.0.1:{free_port()}", "t") as nobody,
        pytest.raises(ServerUnreachable),
    ):
        nobody.list()


def test_local_admin_token_is_found_without_a_token(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("DEPLOYSERVER_TOKEN", "DEPLOYSERVER_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DEPLOYSERVER_DATA_DIR", str(server.data_dir))
    monkeypatch.setenv("DEPLOYSERVER_URL", server.url)
    with DeployClient() as local:
        assert isinstance(local.list(), list)


PUSH_AND_MEASURE = """
import resource, sys
from deployserver.client.sdk import DeployClient
with DeployClient(sys.argv[1], sys.argv[2]) as ds:
    ds.push(sys.argv[3], start=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def _peak_rss_of_push(server: Server, folder: Path) -> int:
    out = subprocess.run(
        [sys.executable, "-c", PUSH_AND_MEASURE, server.url, server.token, str(folder)],
        env=checkout_env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return int(out.stdout.strip())


@pytest.mark.slow
def test_push_streams_from_disk_with_flat_memory(server: Server, tmp_path: Path) -> None:
    size = 256 * 1024 * 1024
    small = write_package(tmp_path / "small", {"model": "sdk-mem"}, {"score.py": SCORE_PY})
    big = write_package(tmp_path / "big", {"model": "sdk-mem"}, {"score.py": SCORE_PY})
    with (big / "weights.bin").open("wb") as fh:
        fh.truncate(size)
    baseline = _peak_rss_of_push(server, small)
    peak = _peak_rss_of_push(server, big)
    print(f"client peak RSS {baseline / 2**20:.0f} MiB small, {peak / 2**20:.0f} MiB for 256 MiB")
    assert peak - baseline < size / 16
    record = json.loads(server.api.get("/api/v1/deployments", params={"model": "sdk-mem"}).text)
    sizes = {f["path"]: f["size"] for f in record["items"][0]["files"]}
    assert sizes["weights.bin"] == size


def test_scale_changes_the_scaling_live(ds: DeployClient, python_template: Path) -> None:
    up = ds.push(python_template, model="sdk-scale", start=False)
    record = ds.scale(up.deploy_id, min_replicas=0, max_replicas=3, target_concurrency=2)
    assert record.metadata["scaling"]["min_replicas"] == 0
    assert record.metadata["scaling"]["max_replicas"] == 3
    with pytest.raises(UnprocessableEntity, match="below min_replicas"):
        ds.scale(up.deploy_id, min_replicas=4, max_replicas=2)
