"""A batching cell as its callers see it: requests sent together share a call of the
script, each gets its own answer (or its own error) on /predict, V2 REST and gRPC, in
process and in a real cell process. The batcher's rules themselves: test_batcher.py."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as triton
from conftest import fixture_dir, serve
from test_grpc_service import grpc_cell
from tritonclient.utils import InferenceServerException

BATCHING = {"max_batch_size": 32, "max_latency_ms": 1000}
"""A wide window: requests wait for the busy first batch, never for the clock."""


def _metadata(first_delay: float = 0.3, **batching: Any) -> dict[str, Any]:
    return {
        "model": "batched",
        "batching": {**BATCHING, **batching},
        "parameters": {"first_delay": first_delay},
    }


def _sizes(client: Any) -> list[int]:
    """The batch sizes the script itself recorded."""
    return list(client.app.state.cell.adapter.instance.sizes)


def _v2(value: float) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 2], "data": [value, 1.0]}]}


async def test_requests_sent_together_share_a_call_and_each_gets_its_own_answer(
    tmp_path: Path,
) -> None:
    async with serve(fixture_dir("batched", tmp_path), _metadata()) as client:
        answers = await asyncio.gather(
            *(client.post("/predict", json={"inputs": f"r{i}"}) for i in range(6))
        )
        sizes = _sizes(client)
    assert [a.status_code for a in answers] == [200] * 6
    bodies = [a.json()["predictions"] for a in answers]
    assert [b["echo"] for b in bodies] == [f"r{i}" for i in range(6)]
    assert sum(sizes) == 6 and len(sizes) < 6 and max(sizes) > 1
    assert sorted(b["batch"] for b in bodies) == sorted(n for n in sizes for _ in range(n))


async def test_a_lone_request_is_a_batch_of_one(tmp_path: Path) -> None:
    async with serve(fixture_dir("batched", tmp_path), _metadata(first_delay=0)) as client:
        answer = await client.post("/predict", json={"inputs": [1, 2], "parameters": {"scale": 3}})
        sizes = _sizes(client)
    assert answer.json() == {"predictions": {"echo": [1, 2], "batch": 1, "scale": 3}}
    assert sizes == [1]


async def test_an_error_of_one_request_stays_with_that_request(tmp_path: Path) -> None:
    async with serve(fixture_dir("batched", tmp_path), _metadata()) as client:
        answers = await asyncio.gather(
            *(client.post("/predict", json=x) for x in ["first", "a", "fail", "b"])
        )
        sizes = _sizes(client)
    assert [a.status_code for a in answers] == [200, 200, 500, 200]
    assert answers[2].json()["error"] == {
        "code": "prediction_failed",
        "message": "ValueError: 'fail' cannot be scored",
    }
    assert answers[1].json()["predictions"]["echo"] == "a"
    assert max(sizes) > 1  # the failed request was in a batch with others, who got answers


async def test_an_answer_that_does_not_split_back_fails_clearly(tmp_path: Path) -> None:
    async with serve(fixture_dir("batch_too_short", tmp_path), {"batching": {}}) as client:
        rest = await client.post("/predict", json=[1, 2])
        v2 = await client.post("/v2/models/batch_too_short/infer", json=_v2(1.0))
    assert rest.status_code == 500
    assert rest.json()["error"]["code"] == "batch_mismatch"
    message = rest.json()["error"]["message"]
    assert message.startswith("predict was given a batch of 1 input and answered 0 items")
    assert v2.status_code == 500 and v2.json()["error"] == message


async def test_v2_infer_batches_and_splits_back(tmp_path: Path) -> None:
    async with serve(fixture_dir("batched", tmp_path), _metadata()) as client:
        answers = await asyncio.gather(
            *(client.post("/v2/models/batched/infer", json=_v2(float(i))) for i in range(5))
        )
        sizes = _sizes(client)
    for i, answer in enumerate(answers):
        outputs = {o["name"]: o for o in answer.json()["outputs"]}
        assert outputs["echo"]["shape"] == [1, 2] and outputs["echo"]["data"] == [float(i), 1.0]
    assert sum(sizes) == 5 and max(sizes) > 1


async def test_grpc_infer_batches_and_splits_back(tmp_path: Path) -> None:
    async def infer(value: float) -> Any:
        rows = triton.InferInput("x", [1, 2], "FP64")
        rows.set_data_from_numpy(np.array([[value, 1.0]]))
        return await cell.triton.infer("batched", [rows])

    async with grpc_cell(fixture_dir("batched", tmp_path), _metadata()) as cell:
        results = await asyncio.gather(*(infer(float(i)) for i in range(5)))
        sizes = list(cell.rest._transport.app.state.cell.adapter.instance.sizes)  # type: ignore[attr-defined]
    for i, result in enumerate(results):
        assert result.as_numpy("echo").tolist() == [[float(i), 1.0]]
    assert sum(sizes) == 5 and max(sizes) > 1


async def test_grpc_answers_a_batch_that_does_not_split_back_with_internal(
    tmp_path: Path,
) -> None:
    rows = triton.InferInput("x", [1, 2], "FP64")
    rows.set_data_from_numpy(np.array([[1.0, 2.0]]))
    async with grpc_cell(fixture_dir("batch_too_short", tmp_path), {"batching": {}}) as cell:
        with pytest.raises(InferenceServerException) as failed:
            await cell.triton.infer("batch_too_short", [rows])
    assert failed.value.status() == "StatusCode.INTERNAL"
    assert "predict was given a batch of 1 input and answered 0 items" in failed.value.message()


async def test_batch_sizes_show_in_the_metrics(tmp_path: Path) -> None:
    async with serve(fixture_dir("batched", tmp_path), _metadata()) as client:
        await asyncio.gather(*(client.post("/predict", json=i) for i in range(4)))
        text = (await client.get("/metrics")).text
        sizes = _sizes(client)
    assert f"cell_batch_size_count {float(len(sizes))}" in text
    assert f"cell_batch_size_sum {float(sum(sizes))}" in text
    assert "cell_batch_waiting 0.0" in text


@pytest.mark.parametrize(
    ("folder", "metadata", "reason"),
    [
        (
            "batched",
            {"batching": {"max_batch_size": 0}},
            "ValueError: batching.max_batch_size must be an integer from 1 to 1024, not 0",
        ),
        (
            "ubiops_files",
            {"batching": {}},
            "BatchingUnsupported: metadata 'batching' needs this project's contract",
        ),
    ],
    ids=["bad-limits", "contract-without-batches"],
)
async def test_a_cell_refuses_batching_it_cannot_do_at_load(
    folder: str, metadata: dict[str, Any], reason: str, tmp_path: Path
) -> None:
    async with serve(fixture_dir(folder, tmp_path), metadata) as client:
        body = (await client.get("/health/ready")).json()
    assert body["state"] == "SETUP_FAILED"
    assert body["reason"].startswith(reason)


@pytest.mark.slow
def test_a_real_cell_batches_concurrent_requests(tmp_path: Path, cell_process: Any) -> None:
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps(_metadata(first_delay=0.5)))
    folder = fixture_dir("batched", tmp_path)
    with cell_process(folder, "--metadata", str(metadata)) as cell, cell.client() as client:

        def send(i: int) -> Any:
            return client.post("/predict", json={"inputs": i})

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(send, range(8)))
        metrics = client.get("/metrics").text
    bodies = [a.json()["predictions"] for a in answers]
    assert [b["echo"] for b in bodies] == list(range(8))
    assert max(b["batch"] for b in bodies) > 1  # the script saw several requests at once
    calls = next(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("cell_batch_size_count")
    )
    assert calls < 8
    assert "batches of 32 within 1000 ms" in cell.output()
