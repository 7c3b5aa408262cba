"""Each older tool's clients against a cell, unchanged: Seldon's requests on /predict,
BudgetML's three endpoints, MLflow's scoring client and error shape, V2 errors read by
tritonclient, and streamed predictions."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import requests
from conftest import TEMPLATES, fixture_dir, serve

MLFLOW_WARNINGS = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
IRIS_COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


def _metadata(name: str) -> dict[str, Any]:
    return json.loads((TEMPLATES / name / "metadata.json").read_text())


# Seldon / PrimeHub


async def test_a_seldon_message_on_predict_reaches_model_py_as_features(
    built_templates: Callable[[str], Path],
) -> None:
    async with serve(built_templates("seldon"), _metadata("seldon")) as client:
        message = await client.post("/predict", json={"data": {"ndarray": IRIS_ROWS}})
        tensor = await client.post(
            "/predict", json={"data": {"tensor": {"shape": [1, 4], "values": IRIS_ROWS[0]}}}
        )
        plain = await client.post("/predict", json=IRIS_ROWS)  # our own contract's request
        seldon = await client.post("/api/v1.0/predictions", json={"data": {"ndarray": IRIS_ROWS}})
    assert message.status_code == 200, message.text
    rows = message.json()["predictions"]
    assert [row.index(max(row)) for row in rows] == [0, 2]  # setosa, virginica
    assert plain.json() == message.json()
    assert tensor.json()["predictions"] == rows[:1]
    assert seldon.json()["data"]["ndarray"] == rows


async def test_a_seldon_message_is_only_read_as_one_for_seldon_models(tmp_path: Path) -> None:
    async with serve(fixture_dir("custom", tmp_path), {}, "service.py:Scorer") as client:
        answer = await client.post("/predict", json={"data": {"ndarray": [[1]]}})
    # our own contract gets the JSON as it came: Scorer doubled each of its keys
    assert answer.json()["predictions"]["doubled"] == ["datadata"]


@pytest.mark.slow
@pytest.mark.parametrize("path", ["/api/v1.0/predictions", "/predict"])
def test_the_primehub_example_request_works_with_curl(
    path: str, built_templates: Callable[[str], Path], cell_process: Any
) -> None:
    """The seed's own curl line, body and all: ``-d '{"data": {}}'``."""
    metadata = str(TEMPLATES / "seldon" / "metadata.json")
    with cell_process(built_templates("seldon"), "--metadata", metadata) as cell:
        out = subprocess.run(
            [
                *("curl", "-k", "-sS", "-X", "POST", "-H", "Content-Type: application/json"),
                *(f"{cell.url}{path}", "-d", '{"data": {}}', "-w", "\n%{http_code}"),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    body, status = out.rsplit("\n", 1)
    assert status == "200", body
    answer = json.loads(body)
    if path == "/predict":
        assert answer == {"predictions": []}
    else:
        assert answer["data"]["ndarray"] == [] and answer["meta"] == {}


async def test_seldon_errors_keep_seldon_s_shape(built_templates: Callable[[str], Path]) -> None:
    async with serve(built_templates("seldon"), _metadata("seldon")) as client:
        not_json = await client.post(
            "/api/v1.0/predictions", content=b"{", headers={"content-type": "application/json"}
        )
        ragged = await client.post(
            "/api/v1.0/predictions", json={"data": {"tensor": {"shape": [3], "values": [1]}}}
        )
    for answer in (not_json, ragged):
        assert answer.status_code == 400
        status = answer.json()["status"]
        assert status["status"] == 1 and status["code"] == -1
        assert status["reason"] == "MICROSERVICE_BAD_DATA"
    assert "not valid JSON" in not_json.json()["status"]["info"]
    assert "do not fit shape [3]" in ragged.json()["status"]["info"]


# BudgetML


@pytest.mark.slow
def test_budgetml_clients_call_all_three_endpoints(tmp_path: Path, cell_process: Any) -> None:
    """Requests as BudgetML's clients send them (paths with their trailing '/')."""
    folder = fixture_dir("budgetml_paths", tmp_path)
    with cell_process(folder) as cell:
        generic = requests.post(f"{cell.url}/predict/", json={"text": "hi"}, timeout=30)
        built = requests.post(f"{cell.url}/predict", json={"respond": True}, timeout=30)
        as_dict = requests.post(
            f"{cell.url}/predict_dict/", json={"payload": {"text": "hello"}}, timeout=30
        )
        bare_dict = requests.post(f"{cell.url}/predict_dict", json={"text": "bare"}, timeout=30)
        picture = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100
        image = requests.post(
            f"{cell.url}/predict_image/",
            files={"request": ("cat.png", picture, "image/png")},
            timeout=30,
        )
        no_file = requests.post(f"{cell.url}/predict_image/", files={"x": (None, "1")}, timeout=30)
        not_object = requests.post(f"{cell.url}/predict_dict/", json=[1, 2], timeout=30)
    assert generic.json() == {
        "predictions": {"given": "request", "path": "/predict/", "body": {"text": "hi"}}
    }
    assert built.status_code == 201 and built.json() == {"built": "by the predictor"}
    assert as_dict.json() == {"given": "payload", "text": "HELLO"}  # bare, as BudgetML
    assert bare_dict.json() == {"given": "payload", "text": "BARE"}
    assert image.json() == {"given": "file", "name": "cat.png", "size": len(picture)}
    assert no_file.status_code == 400
    assert no_file.json() == {"detail": "send one image file, in a file part named 'request'"}
    assert not_object.status_code == 400 and "JSON object" in not_object.json()["detail"]


async def test_budgetml_paths_name_the_contract_they_need(
    built_templates: Callable[[str], Path],
) -> None:
    async with serve(built_templates("python"), _metadata("python")) as client:
        answer = await client.post("/predict_dict/", json={"payload": {"text": "x"}})
    assert answer.status_code == 404
    assert "BudgetML predictors only" in answer.json()["detail"]
    assert "'model'" in answer.json()["detail"]


# MLflow


@MLFLOW_WARNINGS
@pytest.mark.slow
def test_mlflow_s_scoring_client_and_error_reader(
    built_templates: Callable[[str], Path], cell_process: Any
) -> None:
    import pandas as pd
    from mlflow.exceptions import RestException
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    metadata = str(TEMPLATES / "mlflow" / "metadata.json")
    with cell_process(built_templates("mlflow"), "--metadata", metadata) as cell:
        host, port = cell.url.removeprefix("http://").rsplit(":", 1)
        client = ScoringServerClient(host, int(port))
        client.wait_server_ready(timeout=60)
        assert client.get_version()
        good = client.invoke(pd.DataFrame(IRIS_ROWS, columns=IRIS_COLUMNS))
        with pytest.raises(Exception, match="error code 400") as refused:
            client.invoke(pd.DataFrame([row[:3] for row in IRIS_ROWS], columns=IRIS_COLUMNS[:3]))
        as_text = requests.post(
            f"{cell.url}/invocations",
            json={"dataframe_split": {"columns": IRIS_COLUMNS, "data": [["a", "b", "c", "d"]]}},
            timeout=30,
        )
        wrong_type = requests.post(
            f"{cell.url}/invocations", data="x", headers={"content-type": "text/xml"}, timeout=30
        )
    assert good.get_predictions(predictions_format="ndarray").tolist() == [0, 2]
    assert "petal_width" in str(refused.value)  # the missing column, named
    for answer, status in ((as_text, 400), (wrong_type, 415)):
        assert answer.status_code == status, answer.text
        error = RestException(answer.json())  # how MLflow's own REST client reads errors
        assert error.get_http_status_code() == 400  # a code MLflow knows, of a client error
        assert set(answer.json()) == {"error_code", "message"}
    assert "sepal_length" in as_text.json()["message"]


@MLFLOW_WARNINGS
async def test_mlflow_payloads_on_predict_and_errors_while_loading(
    built_templates: Callable[[str], Path],
) -> None:
    async with serve(built_templates("mlflow"), _metadata("mlflow")) as client:
        split = await client.post(
            "/predict", json={"dataframe_split": {"columns": IRIS_COLUMNS, "data": IRIS_ROWS}}
        )
        missing = await client.post(
            "/invocations", json={"dataframe_records": [{"sepal_length": 1.0}]}
        )
        ping = await client.get("/ping")
    assert split.json() == {"predictions": [0, 2]}
    assert missing.status_code == 400
    assert missing.json()["error_code"] == "INVALID_PARAMETER_VALUE"  # the model's own code
    assert ping.status_code == 200


# V2


@pytest.mark.slow
def test_v2_errors_reach_tritonclient_as_their_message(
    built_templates: Callable[[str], Path], cell_process: Any
) -> None:
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    metadata = str(TEMPLATES / "seldon" / "metadata.json")
    with cell_process(built_templates("seldon"), "--metadata", metadata) as cell:
        client = triton.InferenceServerClient(cell.url.removeprefix("http://"))
        try:
            features = triton.InferInput("features", [1, 4], "FP64")
            features.set_data_from_numpy(np.array(IRIS_ROWS[:1]))
            with pytest.raises(InferenceServerException) as unknown:
                client.infer("not-this-one", [features])
        finally:
            client.close()
        odd = [
            {"inputs": ["features"]},
            {
                "inputs": [{"name": "f", "datatype": "FP64", "shape": [1], "data": [1]}],
                "outputs": 3,
            },
            {"inputs": [{"name": "f", "datatype": "FP64", "shape": [1], "parameters": 7}]},
        ]
        answers = [httpx.post(f"{cell.url}/v2/models/iris-seldon/infer", json=body) for body in odd]
        header = httpx.post(
            f"{cell.url}/v2/models/iris-seldon/infer",
            content=b"{}",
            headers={"inference-header-content-length": "99"},
        )
        binary = httpx.post(
            f"{cell.url}/v2/models/iris-seldon/infer",
            json={
                "inputs": [
                    {
                        "name": "f",
                        "datatype": "FP64",
                        "shape": [1],
                        "parameters": {"binary_data_size": 800},
                    }
                ]
            },
        )
    assert (
        unknown.value.message() == "model 'not-this-one' not found; this cell serves 'iris-seldon'"
    )
    assert unknown.value.status() == "404"
    for answer in (*answers, header, binary):
        assert answer.status_code == 400, answer.text
        assert set(answer.json()) == {"error"} and isinstance(answer.json()["error"], str)


# Streaming


async def test_a_generator_streams_json_lines_and_events(tmp_path: Path) -> None:
    async with serve(fixture_dir("streams", tmp_path)) as client:
        lines = await client.post("/predict", json={"count": 3})
        events = await client.post(
            "/predict", json={"kind": "async", "count": 2}, headers={"accept": "text/event-stream"}
        )
        failing = await client.post("/predict", json={"kind": "fails"})
        over_v2 = await client.post(
            "/v2/models/streams/infer",
            json={"inputs": [{"name": "count", "datatype": "INT64", "shape": [1], "data": [2]}]},
        )
    assert lines.headers["content-type"] == "application/x-ndjson"
    assert [json.loads(line) for line in lines.text.splitlines()] == [
        {"index": i, "token": f"t{i}"} for i in range(3)
    ]
    assert events.headers["content-type"].startswith("text/event-stream")
    assert events.text == ('data: {"index":0,"token":"a0"}\n\ndata: {"index":1,"token":"a1"}\n\n')
    first, error = (json.loads(line) for line in failing.text.splitlines())
    assert first == {"index": 0}
    assert error == {
        "error": {"code": "prediction_failed", "message": "RuntimeError: ran out of tokens"}
    }
    assert over_v2.status_code == 200, over_v2.text  # gathered into one answer
    (output,) = over_v2.json()["outputs"]
    assert output["shape"] == [2]
    assert [json.loads(item.replace("'", '"')) for item in output["data"]] == [
        {"index": 0, "token": "t0"},
        {"index": 1, "token": "t1"},
    ]
