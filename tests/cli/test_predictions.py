"""Predictions through the server, from the command line and the SDK: ``/serve/{model}/
predict`` and the asynchronous ``/api/v1/models/{model}/predictions``."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deployserver.client.errors import NotFound
from deployserver.client.sdk import DeployClient
from tests.cli.conftest import TEMPLATES, Server, write_package
from tests.helpers import eventually

SIZES = b"""
class Model:
    def __init__(self, model_dir, **parameters):
        pass

    def load(self):
        pass

    def predict(self, inputs, **kwargs):
        return {name: len(value) for name, value in inputs.items()}
"""


@pytest.fixture(scope="module")
def ds(server: Server) -> Iterator[DeployClient]:
    with DeployClient(server.url, server.token) as client:
        yield client


@pytest.fixture(scope="module")
def sentiment(ds: DeployClient, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python template, ready as model ``predict-sentiment``; its folder."""
    folder = tmp_path_factory.mktemp("pkg") / "python"
    shutil.copytree(TEMPLATES / "python", folder)
    assert ds.wait(ds.push(folder, model="predict-sentiment").deploy_id).status == "ready"
    return folder


@pytest.fixture(scope="module")
def sizes(ds: DeployClient, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A model answering the size of each uploaded file; its name."""
    folder = write_package(
        tmp_path_factory.mktemp("sizes"), {"model": "sizes"}, {"score.py": SIZES}
    )
    assert ds.wait(ds.push(folder).deploy_id).status == "ready"
    return "sizes"


def test_cli_predict_with_json(server: Server, sentiment: Path) -> None:
    answer = server.cli("predict", "predict-sentiment", "--json", f"@{sentiment / 'request.json'}")
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout)["predictions"]["label"] == "positive"
    inline = server.cli("predict", "predict-sentiment", "--json", '{"text": "awful, sad day"}')
    assert json.loads(inline.stdout)["predictions"]["label"] == "negative"


def test_cli_predict_with_a_file(server: Server, sizes: str, tmp_path: Path) -> None:
    upload = tmp_path / "blob.bin"
    upload.write_bytes(b"\x07" * 1234)
    answer = server.cli("predict", sizes, "--file", upload)
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout) == {"predictions": {"file": 1234}}


def test_cli_predict_of_an_unknown_model_exits_3(server: Server) -> None:
    answer = server.cli("predict", "no-such-model", "--json", "{}")
    assert answer.returncode == 3 and answer.stdout == ""


def test_sdk_predict(ds: DeployClient, sentiment: Path, sizes: str, tmp_path: Path) -> None:
    answer = ds.predict("predict-sentiment", {"text": "a lovely, happy day"})
    assert answer["predictions"]["label"] == "positive"
    upload = tmp_path / "blob.bin"
    upload.write_bytes(b"\x01" * 99)
    assert ds.predict(sizes, file=upload) == {"predictions": {"file": 99}}
    with upload.open("rb") as fh:
        assert ds.predict(sizes, file=fh) == {"predictions": {"file": 99}}
    with pytest.raises(NotFound):
        ds.predict("no-such-model", {})


def test_sdk_predict_async(ds: DeployClient, sentiment: Path) -> None:
    queued = ds.predict_async("predict-sentiment", {"text": "great and lovely"})
    assert queued["status"] == "queued" and queued["request_id"]
    done: dict[str, object] = {}

    def finished() -> bool:
        done.update(ds.get_prediction(queued["request_id"]))
        return done["status"] in ("succeeded", "failed")

    eventually(finished, what="the queued prediction to finish")
    assert done["status"] == "succeeded", done
    assert done["model"] == "predict-sentiment"
    assert '"positive"' in json.dumps(done["result"])  # the cell's answer, as stored
    with pytest.raises(NotFound):
        ds.get_prediction("no-such-request")


SELDON_MESSAGE = {"data": {"ndarray": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}}


@pytest.fixture(scope="module")
def iris_seldon(ds: DeployClient, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The Seldon / PrimeHub template (a Model.py), ready; its model name."""
    folder = tmp_path_factory.mktemp("pkg") / "seldon"
    shutil.copytree(TEMPLATES / "seldon", folder)
    assert ds.wait(ds.push(folder).deploy_id).status == "ready"
    return "iris-seldon"


def _species(rows: list[list[float]]) -> list[int]:
    return [row.index(max(row)) for row in rows]


def test_cli_predict_sends_a_seldon_message_to_a_model_py(server: Server, iris_seldon: str) -> None:
    message = json.dumps(SELDON_MESSAGE)
    plain = server.cli("predict", iris_seldon, "--json", message)
    assert plain.returncode == 0, plain.stderr
    assert _species(json.loads(plain.stdout)["predictions"]) == [0, 2]  # setosa, virginica
    seldon = server.cli("predict", iris_seldon, "--json", message, "--path", "api/v1.0/predictions")
    assert seldon.returncode == 0, seldon.stderr
    answer = json.loads(seldon.stdout)
    assert answer["data"]["names"] == ["setosa", "versicolor", "virginica"]
    assert _species(answer["data"]["ndarray"]) == [0, 2]
    escape = server.cli("predict", iris_seldon, "--json", message, "--path", "../health")
    assert escape.returncode == 2 and "--path" in escape.stderr


def _finished(ds: DeployClient, request_id: str) -> dict[str, Any]:
    done: dict[str, Any] = {}

    def finished() -> bool:
        done.update(ds.get_prediction(request_id))
        return done["status"] in ("succeeded", "failed")

    eventually(finished, what=f"prediction {request_id} to finish")
    return done


def test_async_predictions_of_a_seldon_message_on_either_path(
    ds: DeployClient, iris_seldon: str, server: Server
) -> None:
    on_predict = ds.predict_async(iris_seldon, SELDON_MESSAGE)
    on_seldon = ds.predict_async(iris_seldon, SELDON_MESSAGE, path="api/v1.0/predictions")
    first, second = _finished(ds, on_predict["request_id"]), _finished(ds, on_seldon["request_id"])
    assert first["status"] == "succeeded", first
    assert first["path"] == "predict" and _species(first["result"]) == [0, 2]
    assert second["status"] == "succeeded", second
    assert second["path"] == "api/v1.0/predictions"
    assert set(second["result"]) == {"data", "meta"}  # Seldon's whole answer, kept
    assert _species(second["result"]["data"]["ndarray"]) == [0, 2]

    bad = ds.predict_async(iris_seldon, {"rows": []}, path="api/v1.0/predictions")
    failed = _finished(ds, bad["request_id"])
    assert failed["status"] == "failed"
    assert "the cell answered 400: a SeldonMessage needs one of" in failed["error"]


@pytest.mark.parametrize(
    "path",
    [
        "../predict",
        "/predict",
        "api/../../x",
        "http://example.com/x",
        "predict?x=1",
        "predict#x",
        "%2e%2e/predict",
        "a//b",
        "predict\\..",
        "",
    ],
)
def test_async_predictions_refuse_a_path_that_leaves_the_cell(
    server: Server, iris_seldon: str, path: str
) -> None:
    def queued() -> int:
        listed = server.api.get("/api/v1/predictions", params={"model": iris_seldon})
        return len(listed.json()["items"])

    before = queued()
    answer = server.api.post(
        f"/api/v1/models/{iris_seldon}/predictions", params={"path": path}, json=SELDON_MESSAGE
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "bad_request"
    assert "path" in answer.json()["error"]["message"]
    assert queued() == before  # nothing was kept of it
