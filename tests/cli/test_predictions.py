"""Predictions through the server, from the command line and the SDK: ``/serve/{model}/
predict`` and the asynchronous ``/api/v1/models/{model}/predictions``."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployserver.client import DeployClient
from deployserver.client_errors import NotFound
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
