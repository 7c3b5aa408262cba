"""Calling conventions: explicit entrypoints, UbiOps files, BudgetML requests, /predict bodies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, TEMPLATES, fixture_dir, serve, settled

from serving_cell.contracts import infer_contract
from serving_cell.loader import import_script
from serving_cell.settings import METADATA_ENV, MetadataError, read_metadata


@pytest.mark.parametrize(
    ("class_name", "contract"),
    [
        ("Scorer", "model"),
        ("SeldonStyle", "seldon"),
        ("UbiOpsStyle", "ubiops"),
        ("BudgetStyle", "budgetml"),
    ],
)
def test_an_explicit_class_gets_the_convention_its_signatures_show(
    class_name: str, contract: str
) -> None:
    module = import_script(FIXTURES / "custom", "service.py")
    assert infer_contract(getattr(module, class_name)) == contract


async def test_explicit_entrypoint_with_sibling_import_and_parameters(tmp_path: Path) -> None:
    metadata = {"model": "custom", "parameters": {"factor": 3}}
    async with serve(fixture_dir("custom", tmp_path), metadata, "service.py:Scorer") as client:
        index = (await client.get("/")).json()
        answer = await client.post("/predict", json={"inputs": [1, 2], "parameters": {"k": 1}})
    assert index == {"model": "custom", "version": None, "contract": "model", "state": "READY"}
    assert answer.json() == {"predictions": {"doubled": [2, 4], "factor": 3, "kwargs": ["k"]}}


async def test_explicit_entrypoint_from_metadata_and_ubiops_context(tmp_path: Path) -> None:
    metadata = {"model": "ubi", "entrypoint": "service.py:UbiOpsStyle"}
    async with serve(fixture_dir("custom", tmp_path), metadata) as client:
        answer = await client.post("/predict", json={"a": 1})
    assert answer.json() == {"predictions": {"deployment": "ubi", "data": {"a": 1}, "env": None}}


async def test_budgetml_predictor_reads_the_request_itself(tmp_path: Path) -> None:
    async with serve(fixture_dir("custom", tmp_path), {}, "service.py:BudgetStyle") as client:
        answer = await client.post(
            "/predict", content=b"raw text", headers={"content-type": "text/plain"}
        )
    assert answer.json() == {"predictions": {"path": "/predict", "body": "raw text"}}


async def test_ubiops_file_fields_are_paths_in_and_bytes_out(tmp_path: Path) -> None:
    metadata = json.loads((FIXTURES / "ubiops_files" / "metadata.json").read_text())
    async with serve(fixture_dir("ubiops_files", tmp_path), metadata) as client:
        upload = await client.post("/predict", files={"document": ("d.bin", b"abc")})
        as_json = await client.post("/predict", json={"document": "eHl6"})  # base64 "xyz"
        not_base64 = await client.post("/predict", json={"document": "%%%"})
    assert upload.json() == {"predictions": {"size": 3, "is_path": True, "reversed": "Y2Jh"}}
    assert as_json.json()["predictions"]["reversed"] == "enl4"  # base64 of "zyx"
    assert not_base64.status_code == 400
    assert "upload it as multipart/form-data or base64" in not_base64.json()["error"]["message"]


async def test_predict_bodies_and_their_errors(tmp_path: Path) -> None:
    async with serve(fixture_dir("slow_load", tmp_path), wait=False) as client:
        (tmp_path / "slow_load" / "release").touch()
        await settled(client)
        plain = await client.post("/predict", json=[1, 2])
        wrapped = await client.post("/predict", json={"inputs": {"a": 1}})
        not_wrapped = await client.post("/predict", json={"inputs": 1, "other": 2})
        curl_default = await client.post(
            "/predict",
            content=b'{"a": 1}',
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        form = await client.post("/predict", data={"a": "1"}, files={"f": ("f.txt", b"hi")})
        raw = await client.post(
            "/predict", content=b"\x00\x01", headers={"content-type": "application/octet-stream"}
        )
        broken = await client.post(
            "/predict", content=b"{", headers={"content-type": "application/json"}
        )
        xml = await client.post(
            "/predict", content=b"<a/>", headers={"content-type": "application/xml"}
        )
        missing = await client.get("/nowhere")
        wrong_method = await client.get("/predict")
    assert plain.json() == {"predictions": {"echo": [1, 2]}}
    assert wrapped.json() == {"predictions": {"echo": {"a": 1}}}
    assert not_wrapped.json() == {"predictions": {"echo": {"inputs": 1, "other": 2}}}
    assert curl_default.json() == {"predictions": {"echo": {"a": 1}}}
    assert form.json() == {"predictions": {"echo": {"a": "1", "f": "aGk="}}}
    assert raw.json() == {"predictions": {"echo": "AAE="}}
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "invalid_input"
    assert xml.status_code == 415
    assert xml.json()["error"]["code"] == "unsupported_media_type"
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"


async def test_input_spec_types_and_form_coercion(tmp_path: Path) -> None:
    spec = [
        {"name": "n", "data_type": "int"},
        {"name": "x", "data_type": "double"},
        {"name": "ok", "data_type": "bool"},
        {"name": "tags", "data_type": "array_string"},
        {"name": "extra", "data_type": "dict"},
    ]
    good = {"n": 1, "x": 2, "ok": True, "tags": ["a"], "extra": {}}
    folder = tmp_path / "echo"
    folder.mkdir()
    (folder / "score.py").write_text(
        "class Model:\n    def __init__(self, d):\n        pass\n"
        "    def predict(self, inputs):\n        return {'got': inputs}\n"
    )
    async with serve(folder, {"input_spec": spec}) as client:
        ok = await client.post("/predict", json=good)
        as_form = await client.post(
            "/predict", data={"n": "1", "x": "2.5", "ok": "true", "tags": '["a"]', "extra": "{}"}
        )
        bad_int = await client.post("/predict", json={**good, "n": True})
        bad_item = await client.post("/predict", json={**good, "tags": ["a", 2]})
        bad_form = await client.post("/predict", data={**{k: "1" for k in good}, "n": "one"})
        unknown = await client.post("/predict", json={**good, "typo": 1})
        not_object = await client.post("/predict", json=[1])
    assert ok.json() == {"predictions": {"got": good}}
    assert as_form.json()["predictions"]["got"] == {**good, "x": 2.5}
    assert bad_int.json()["error"] == {
        "code": "input_spec_mismatch",
        "message": "input field 'n' should be int, got bool",
    }
    assert bad_item.json()["error"]["message"] == "input field 'tags' should be string, got int"
    assert bad_form.json()["error"]["message"] == "input field 'n' should be int, got 'one'"
    assert unknown.json()["error"]["message"] == (
        "input does not match the spec: unknown fields ['typo']"
    )
    assert not_object.status_code == 400
    assert "should be an object with fields" in not_object.json()["error"]["message"]


async def test_metrics_count_requests_per_route_and_report_load_time(tmp_path: Path) -> None:
    async with serve(fixture_dir("raises_in_predict", tmp_path), {"model": "m"}) as client:
        await client.post("/predict", json=[1])
        await client.post("/predict", json=[-1])
        await client.get("/v2/models/m/ready")
        text = (await client.get("/metrics")).text
    assert 'cell_requests_total{endpoint="/predict",method="POST",status="200"} 1.0' in text
    assert 'cell_requests_total{endpoint="/predict",method="POST",status="500"} 1.0' in text
    assert 'endpoint="/v2/models/{name}/ready"' in text
    assert 'cell_request_duration_seconds_bucket{endpoint="/predict"' in text
    assert "cell_model_load_seconds " in text
    assert "cell_model_ready 1.0" in text


def test_metadata_file_wins_over_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text('{"model": "from-file"}')
    env = {METADATA_ENV: '{"model": "from-env"}'}
    assert read_metadata(path, env) == {"model": "from-file"}
    assert read_metadata(None, env) == {"model": "from-env"}
    assert read_metadata(None, {}) == {}
    with pytest.raises(MetadataError, match="must be a JSON object"):
        read_metadata(None, {METADATA_ENV: "[1]"})


@pytest.mark.slow
def test_cell_process_reads_metadata_from_the_environment(
    tmp_path: Path, cell_process: Any
) -> None:
    metadata = (TEMPLATES / "ubiops" / "metadata.json").read_text()
    folder = fixture_dir("custom", tmp_path)
    env = {
        METADATA_ENV: json.dumps(
            {
                **json.loads(metadata),
                "input_spec": None,
                "output_spec": None,
                "env": {"CELL_TEST_VAR": "1"},
            }
        )
    }
    entrypoint = ("--entrypoint", "service.py:UbiOpsStyle")
    with cell_process(folder, *entrypoint, env=env) as cell, cell.client() as client:
        answer = client.post("/predict", json={"x": 1})
        v2 = client.get("/v2/models/stats-ubiops/ready")
    # The deployment's env reaches the script's process as environment variables.
    assert answer.json() == {
        "predictions": {"deployment": "stats-ubiops", "data": {"x": 1}, "env": "1"}
    }
    assert v2.status_code == 200


async def test_seldon_model_without_init_gets_model_uri_as_attribute(tmp_path: Path) -> None:
    (tmp_path / "Model.py").write_text(
        "class Model:\n"
        "    def load(self):\n        self.uri = self.model_uri\n"
        "    def predict(self, X, feature_names, **kwargs):\n"
        "        return {'uri': self.uri, 'meta': kwargs.get('meta')}\n"
    )
    async with serve(tmp_path) as client:
        answer = await client.post(
            "/api/v1.0/predictions", json={"data": {"ndarray": [1]}, "meta": {"tags": {"a": "b"}}}
        )
    assert answer.json() == {
        "jsonData": {"uri": str(tmp_path), "meta": {"tags": {"a": "b"}}},
        "meta": {},
    }
