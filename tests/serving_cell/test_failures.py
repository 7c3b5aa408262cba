"""One fixture per failure mode; what a user (or the control plane) sees from the cell."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import FIXTURES, fixture_dir, serve, settled


async def test_raises_in_load_reports_setup_failed_and_stays_up(tmp_path: Path) -> None:
    async with serve(fixture_dir("raises_in_load", tmp_path)) as client:
        ready = await client.get("/health/ready")
        live = await client.get("/health/live")
        predict = await client.post("/predict", json=[1])
        v2_ready = await client.get("/v2/health/ready")
    assert ready.status_code == 503
    body = ready.json()
    assert body["state"] == "SETUP_FAILED"
    assert body["reason"].startswith("RuntimeError: weights file is corrupt")
    assert "Traceback (most recent call last)" in body["reason"]
    assert 'score.py", line' in body["reason"]
    assert "reading weights from weights.bin" in body["setup"]["logs"]
    assert body["setup"]["completed_at"] is not None
    assert live.status_code == 200 and live.json() == {"state": "SETUP_FAILED"}
    assert predict.status_code == 503
    assert predict.json()["error"]["code"] == "model_not_ready"
    assert "failed to load" in predict.json()["error"]["message"]
    assert v2_ready.status_code == 503


@pytest.mark.slow
def test_raises_in_load_keeps_the_cell_process_running(tmp_path: Path, cell_process: Any) -> None:
    with cell_process(fixture_dir("raises_in_load", tmp_path)) as cell, cell.client() as client:
        first = client.get("/health/ready")
        again = client.get("/health/ready")
        assert cell.process.poll() is None
    assert first.status_code == again.status_code == 503
    assert again.json()["state"] == "SETUP_FAILED"
    assert "weights file is corrupt" in again.json()["reason"]
    # Setup output reaches the process's own output too, for `deployserver logs`.
    assert "reading weights from weights.bin" in cell.output()


async def test_slow_load_is_starting_until_it_finishes(tmp_path: Path) -> None:
    folder = fixture_dir("slow_load", tmp_path)
    async with serve(folder, wait=False) as client:
        starting = await client.get("/health/ready")
        live = await client.get("/health/live")
        early = await client.post("/predict", json={"x": 1})
        (folder / "release").touch()
        settled_body = await settled(client)
        later = await client.post("/predict", json={"x": 1})
    assert starting.status_code == 503
    assert starting.json()["state"] == "STARTING"
    assert starting.json()["reason"] == "loading the model"
    assert live.status_code == 200
    assert early.status_code == 503
    assert early.json()["error"]["code"] == "model_not_ready"
    assert "still loading" in early.json()["error"]["message"]
    assert settled_body["state"] == "READY"
    assert "waiting for the release file" in settled_body["setup"]["logs"]
    assert later.json() == {"predictions": {"echo": {"x": 1}}}


@pytest.mark.slow
def test_slow_load_cell_process_answers_health_while_loading(
    tmp_path: Path, cell_process: Any
) -> None:
    folder = fixture_dir("slow_load", tmp_path)
    with cell_process(folder, wait=False) as cell, cell.client() as client:
        starting = client.get("/health/ready")
        (folder / "release").touch()
        for _ in range(1200):
            ready = client.get("/health/ready")
            if ready.status_code == 200:
                break
            time.sleep(0.05)
        answer = client.post("/predict", json=[1, 2])
    assert starting.status_code == 503 and starting.json()["state"] == "STARTING"
    assert ready.status_code == 200 and ready.json()["state"] == "READY"
    assert answer.json() == {"predictions": {"echo": [1, 2]}}


@pytest.mark.slow
def test_a_cell_stopped_while_loading_exits_without_waiting_for_load(
    tmp_path: Path, cell_process: Any
) -> None:
    folder = fixture_dir("slow_load", tmp_path)
    with cell_process(folder, wait=False) as cell, cell.client() as client:
        assert client.get("/health/ready").json()["state"] == "STARTING"
        cell.process.terminate()
        code = cell.process.wait()
    assert code in (0, -signal.SIGTERM)  # uvicorn may re-raise the signal it handled
    assert not (folder / "gave-up").exists()  # the load was still waiting when it exited
    assert "Shutting down" in cell.output()


async def test_missing_predict_fails_setup_naming_the_method(tmp_path: Path) -> None:
    async with serve(fixture_dir("missing_predict", tmp_path)) as client:
        ready = await client.get("/health/ready")
    assert ready.status_code == 503
    body = ready.json()
    assert body["state"] == "SETUP_FAILED"
    assert body["reason"].startswith(
        "MissingMethod: score.py:Model has no predict() method; "
        "the 'model' contract needs predict(inputs, **kwargs)"
    )


async def test_raises_in_predict_is_a_500_with_the_message_and_the_cell_serves_on(
    tmp_path: Path,
) -> None:
    async with serve(fixture_dir("raises_in_predict", tmp_path)) as client:
        failed = await client.post("/predict", json=[1, -1])
        fine = await client.post("/predict", json=[1, 2])
        v2 = await client.post(
            "/v2/models/raises_in_predict/infer",
            json={"inputs": [{"name": "x", "datatype": "INT64", "shape": [1], "data": [-3]}]},
        )
        ready = await client.get("/health/ready")
    assert failed.status_code == 500
    assert failed.json() == {
        "error": {
            "code": "prediction_failed",
            "message": "ValueError: negative numbers are not allowed",
        }
    }
    assert "Traceback" not in failed.text
    assert fine.json() == {"predictions": [2, 4]}
    assert v2.status_code == 500
    assert v2.json() == {"error": "ValueError: negative numbers are not allowed"}
    assert ready.status_code == 200


async def test_wrong_output_for_the_spec_is_named_field_by_field(tmp_path: Path) -> None:
    metadata = json.loads((FIXTURES / "wrong_output" / "metadata.json").read_text())
    async with serve(fixture_dir("wrong_output", tmp_path), metadata) as client:
        answer = await client.post("/predict", json={})
    assert answer.status_code == 500
    assert answer.json() == {
        "error": {
            "code": "output_spec_mismatch",
            "message": "the model's output field 'label' should be string, got int",
        }
    }


async def test_sync_predict_runs_in_a_thread_so_health_still_answers(tmp_path: Path) -> None:
    async with serve(fixture_dir("blocking_sync", tmp_path)) as client:
        model = client.app.state.cell.adapter.instance  # type: ignore[attr-defined]
        results: dict[str, Any] = {}

        async def predict() -> None:
            results["predict"] = await client.post("/predict", json=[7])

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(predict)
            await anyio.to_thread.run_sync(model.started.wait, 60)
            results["ready"] = await client.get("/health/ready")
            model.gate.set()
    assert results["ready"].status_code == 200
    assert results["predict"].json() == {"predictions": [7]}


async def test_async_predicts_run_concurrently(tmp_path: Path) -> None:
    async with serve(fixture_dir("concurrent_async", tmp_path)) as client:
        answers: list[Any] = []

        async def predict(value: int) -> None:
            answers.append((await client.post("/predict", json=value)).json())

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(predict, 1)
            tasks.start_soon(predict, 2)
    # Each call waits for the other: both finishing proves they ran at the same time.
    assert sorted(a["predictions"]["inputs"] for a in answers) == [1, 2]
    assert all(a["predictions"]["arrived"] == 2 for a in answers)


async def test_a_package_without_scoring_script_fails_setup_with_what_was_expected(
    tmp_path: Path,
) -> None:
    (tmp_path / "notes.txt").write_text("no script here")
    async with serve(tmp_path) as client:
        body = (await client.get("/health/ready")).json()
    assert body["state"] == "SETUP_FAILED"
    assert body["reason"].startswith("EntrypointError: no scoring script")


async def test_a_script_with_a_syntax_error_fails_setup(tmp_path: Path) -> None:
    (tmp_path / "score.py").write_text("class Model:\n    def predict(self, x):\n        (\n")
    async with serve(tmp_path) as client:
        body = (await client.get("/health/ready")).json()
    assert body["state"] == "SETUP_FAILED"
    assert "score.py is not valid Python" in body["reason"]
