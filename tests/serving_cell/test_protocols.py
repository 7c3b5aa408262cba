"""The wire protocols as clients we did not write speak them: tritonclient, curl, MLflow."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import TEMPLATES, fixture_dir, serve

MLFLOW_WARNINGS = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
SEED_REQUEST = '{"data": {"ndarray": [[5.1, 3.5, 1.4, 0.2]]}}'
IRIS_COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [6.7, 3.0, 5.2, 2.3]]


def _metadata(name: str) -> str:
    return str(TEMPLATES / name / "metadata.json")


@pytest.mark.slow
@pytest.mark.parametrize("binary", [False, True], ids=["json-tensors", "binary-tensors"])
def test_tritonclient_infers_against_a_cell(
    binary: bool, built_templates: Callable[[str], Path], cell_process: Any
) -> None:
    import tritonclient.http as triton

    folder = built_templates("seldon")
    with cell_process(folder, "--metadata", _metadata("seldon")) as cell:
        client = triton.InferenceServerClient(cell.url.removeprefix("http://"))
        try:
            assert client.is_server_live() and client.is_server_ready()
            assert client.is_model_ready("iris-seldon")
            assert client.get_model_metadata("iris-seldon")["name"] == "iris-seldon"
            features = triton.InferInput("features", [2, 4], "FP64")
            features.set_data_from_numpy(np.array(IRIS_ROWS[::2]), binary_data=binary)
            wanted = triton.InferRequestedOutput("probabilities", binary_data=False)
            result = client.infer("iris-seldon", [features], outputs=[wanted], request_id="r1")
        finally:
            client.close()
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (2, 3)
    assert probabilities.argmax(axis=1).tolist() == [0, 2]
    assert result.get_response()["id"] == "r1"


@pytest.mark.slow
def test_the_seldon_seed_request_works_unchanged_with_curl(
    built_templates: Callable[[str], Path], cell_process: Any
) -> None:
    with cell_process(built_templates("seldon"), "--metadata", _metadata("seldon")) as cell:
        out = subprocess.run(
            [
                "curl",
                "-sS",
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                f"{cell.url}/api/v1.0/predictions",
                "-d",
                SEED_REQUEST,
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    message = json.loads(out)
    assert set(message) == {"data", "meta"}
    assert message["data"]["names"] == ["setosa", "versicolor", "virginica"]
    (row,) = message["data"]["ndarray"]
    assert len(row) == 3 and row.index(max(row)) == 0


@pytest.fixture
def local_pyfunc(built_templates: Callable[[str], Path]) -> Any:
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(str(built_templates("mlflow")))


@MLFLOW_WARNINGS
async def test_mlflow_invocations_match_local_pyfunc(
    built_templates: Callable[[str], Path], local_pyfunc: Any
) -> None:
    import pandas as pd

    frame = pd.DataFrame(IRIS_ROWS, columns=IRIS_COLUMNS)
    expected = local_pyfunc.predict(frame).tolist()
    csv = frame.to_csv(index=False)
    meta = json.loads(Path(_metadata("mlflow")).read_text())
    async with serve(built_templates("mlflow"), meta) as client:
        split = await client.post(
            "/invocations", json={"dataframe_split": {"columns": IRIS_COLUMNS, "data": IRIS_ROWS}}
        )
        records = await client.post(
            "/invocations", json={"dataframe_records": frame.to_dict(orient="records")}
        )
        as_csv = await client.post(
            "/invocations", content=csv, headers={"content-type": "text/csv"}
        )
        via_predict = await client.post("/predict", json=frame.to_dict(orient="records"))
        bad = await client.post("/invocations", json={"rows": IRIS_ROWS})
    assert len(set(expected)) == 3
    for answer in (split, records, as_csv, via_predict):
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"predictions": expected}
    assert bad.status_code == 400
    assert bad.json()["error_code"] == "BAD_REQUEST"  # MLflow's own error shape
    assert "exactly one of" in bad.json()["message"]


@MLFLOW_WARNINGS
@pytest.mark.slow
def test_mlflow_model_over_v2_with_named_columns_matches_local_pyfunc(
    built_templates: Callable[[str], Path], local_pyfunc: Any, cell_process: Any
) -> None:
    import pandas as pd
    import tritonclient.http as triton

    columns = np.array(IRIS_ROWS).T
    expected = local_pyfunc.predict(pd.DataFrame(IRIS_ROWS, columns=IRIS_COLUMNS)).tolist()
    with cell_process(built_templates("mlflow"), "--metadata", _metadata("mlflow")) as cell:
        client = triton.InferenceServerClient(cell.url.removeprefix("http://"))
        try:
            inputs = []
            for name, values in zip(IRIS_COLUMNS, columns, strict=True):
                tensor = triton.InferInput(name, [len(values)], "FP64")
                tensor.set_data_from_numpy(values, binary_data=True)
                inputs.append(tensor)
            result = client.infer("iris-mlflow", inputs)
        finally:
            client.close()
    assert result.as_numpy("predictions").tolist() == expected


async def test_v2_metadata_errors_and_tensor_shapes(built_templates: Callable[[str], Path]) -> None:
    meta = json.loads(Path(_metadata("ubiops")).read_text())
    async with serve(built_templates("ubiops"), meta) as client:
        model = await client.get("/v2/models/stats-ubiops")
        wrong = await client.post("/v2/models/other/infer", json={"inputs": []})
        wrong_ready = await client.get("/v2/models/other/ready")
        empty = await client.post("/v2/models/stats-ubiops/infer", json={"inputs": []})
        bad_shape = await client.post(
            "/v2/models/stats-ubiops/infer",
            json={
                "inputs": [{"name": "numbers", "datatype": "FP64", "shape": [3], "data": [1, 2]}]
            },
        )
        bad_type = await client.post(
            "/v2/models/stats-ubiops/infer",
            json={"inputs": [{"name": "numbers", "datatype": "FP128", "shape": [1], "data": [1]}]},
        )
        not_json = await client.post("/v2/models/stats-ubiops/infer", content=b"{")
    assert model.json()["inputs"] == [{"name": "numbers", "datatype": "FP64", "shape": [-1]}]
    assert model.json()["platform"] == "ubiops"
    assert wrong.status_code == 404 and wrong_ready.status_code == 404
    assert wrong.json() == {"error": "model 'other' not found; this cell serves 'stats-ubiops'"}
    assert empty.status_code == 400 and "non-empty 'inputs'" in empty.json()["error"]
    assert bad_shape.status_code == 400
    assert bad_shape.json() == {"error": "input 'numbers': shape [3] needs 3 values, got 2"}
    assert bad_type.status_code == 400 and "unknown datatype 'FP128'" in bad_type.json()["error"]
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["error"]


async def test_v2_dict_answers_become_one_output_per_key(tmp_path: Path) -> None:
    async with serve(fixture_dir("custom", tmp_path), {"model": "m"}, "service.py:Scorer") as c:
        answer = await c.post(
            "/v2/models/m/infer",
            json={
                "id": "7",
                "inputs": [
                    {"name": "x", "datatype": "INT32", "shape": [2, 2], "data": [[1, 2], [3, 4]]}
                ],
            },
        )
    body = answer.json()
    assert body["id"] == "7" and body["model_name"] == "m"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["doubled"] == {
        "name": "doubled",
        "datatype": "INT32",
        "shape": [2, 2],
        "data": [2, 4, 6, 8],
    }
    assert outputs["factor"]["data"] == [1]


async def test_seldon_message_kinds(tmp_path: Path) -> None:
    folder = fixture_dir("custom", tmp_path)
    async with serve(folder, {}, "service.py:SeldonStyle") as client:
        ndarray = await client.post(
            "/api/v1.0/predictions",
            json={"data": {"names": ["a", "b"], "ndarray": [[1, 2], [3, 4]]}},
        )
        tensor = await client.post(
            "/api/v1.0/predictions",
            json={"data": {"tensor": {"shape": [3, 2], "values": [1, 2, 3, 4, 5, 6]}}},
        )
        json_data = await client.post("/api/v1.0/predictions", json={"jsonData": {"k": [1]}})
        str_data = await client.post("/api/v1.0/predictions", json={"strData": "abc"})
        empty = await client.post("/api/v1.0/predictions", json={"data": {}})
        bad = await client.post("/api/v1.0/predictions", json={"rows": [[1, 2]]})
    assert ndarray.json() == {
        "jsonData": {"rows": 2, "names": ["a", "b"], "from": str(folder)},
        "meta": {},
    }
    assert tensor.json()["jsonData"]["rows"] == 3
    assert json_data.json()["jsonData"]["rows"] == 1
    assert str_data.json()["jsonData"]["rows"] == 3
    # Seldon's wrapper reads a 'data' with neither ndarray nor tensor as no features
    assert empty.json()["jsonData"]["rows"] == 0
    assert bad.status_code == 400  # and answers errors in its own shape
    assert bad.json() == {
        "status": {
            "status": 1,
            "info": "a SeldonMessage needs one of data.ndarray, data.tensor, "
            "jsonData, strData, binData",
            "code": -1,
            "reason": "MICROSERVICE_BAD_DATA",
        }
    }


async def test_seldon_tensor_in_tensor_out(tmp_path: Path) -> None:
    async with serve(fixture_dir("raises_in_predict", tmp_path)) as client:
        answer = await client.post(
            "/api/v1.0/predictions", json={"data": {"tensor": {"shape": [3], "values": [1, 2, 3]}}}
        )
    assert answer.json() == {
        "data": {"names": [], "tensor": {"shape": [3], "values": [2, 4, 6]}},
        "meta": {},
    }
