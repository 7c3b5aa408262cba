"""Every template deployed as a user would: in-process and as a real cell process."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import TEMPLATES, serve

# mlflow warns about its own type hints at import; not ours to fix, and only in its tests.
MLFLOW_WARNINGS = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


def _sample_png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (30, 40, 210)).save(buffer, format="PNG")
    return buffer.getvalue()


def _request(name: str) -> Any:
    return json.loads((TEMPLATES / name / "request.json").read_text())


def _iris_labels(answer: dict[str, Any]) -> None:
    assert [row["label"] for row in answer["predictions"]] == ["setosa", "virginica"]
    assert all(abs(sum(row["probabilities"]) - 1) < 1e-3 for row in answer["predictions"])


def _python(answer: dict[str, Any]) -> None:
    assert answer["predictions"]["label"] == "positive"
    assert answer["predictions"]["score"] > 0


def _seldon(answer: dict[str, Any]) -> None:
    assert answer["data"]["names"] == ["setosa", "versicolor", "virginica"]
    (row,) = answer["data"]["ndarray"]
    assert row.index(max(row)) == 0
    assert answer["meta"] == {}


def _ubiops(answer: dict[str, Any]) -> None:
    assert answer == {"predictions": {"count": 8, "mean": 5.0, "stdev": 2.0}}


def _budgetml(answer: dict[str, Any]) -> None:
    assert answer == {"predictions": {"characters": 32, "words": 4, "longest": "predictions"}}


def _mlflow(answer: dict[str, Any]) -> None:
    assert answer == {"predictions": [0, 2]}


def _streaming(answer: Any) -> None:
    tokens = ["Serving", "cells", "stream", ",", "token", "by", "token", "."]
    assert answer == [{"index": i, "token": t} for i, t in enumerate(tokens)] + [
        {"done": True, "tokens": len(tokens)}
    ]


def _answer(response: Any) -> Any:
    """The JSON answer; a streamed one (JSON lines) as the list of its items."""
    if response.headers["content-type"] == "application/x-ndjson":
        return [json.loads(line) for line in response.text.splitlines()]
    return response.json()


def _image(answer: dict[str, Any]) -> None:
    assert answer["predictions"]["label"] == "blue"
    assert len(answer["predictions"]["mean_rgb"]) == 3


# name -> (path, request keyword arguments for httpx, check of the JSON answer)
CASES: dict[str, tuple[str, Callable[[], dict[str, Any]], Callable[[Any], None]]] = {
    "python": ("/predict", lambda: {"json": _request("python")}, _python),
    "sklearn": ("/predict", lambda: {"json": _request("sklearn")}, _iris_labels),
    "mlflow": ("/invocations", lambda: {"json": _request("mlflow")}, _mlflow),
    "seldon": ("/api/v1.0/predictions", lambda: {"json": _request("seldon")}, _seldon),
    "ubiops": ("/predict", lambda: {"json": _request("ubiops")}, _ubiops),
    "budgetml": ("/predict", lambda: {"json": _request("budgetml")}, _budgetml),
    "image": ("/predict", lambda: {"files": {"image": ("blue.png", _sample_png())}}, _image),
    "streaming": ("/predict", lambda: {"json": _request("streaming")}, _streaming),
}
PARAMS = [pytest.param(n, marks=MLFLOW_WARNINGS if n == "mlflow" else ()) for n in CASES]


def _metadata(name: str) -> dict[str, Any]:
    return json.loads((TEMPLATES / name / "metadata.json").read_text())


def test_every_template_has_a_case_and_the_files_the_index_promises() -> None:
    folders = sorted(p.name for p in TEMPLATES.iterdir() if p.is_dir())
    assert folders == sorted(CASES)
    for name in folders:
        assert (TEMPLATES / name / "README.md").is_file()
        assert _metadata(name)["model"]
        assert f"]({name}/)" in (TEMPLATES / "README.md").read_text()


@pytest.mark.parametrize("name", PARAMS)
async def test_template_in_process(name: str, built_templates: Callable[[str], Path]) -> None:
    path, request, check = CASES[name]
    async with serve(built_templates(name), _metadata(name)) as client:
        assert (await client.get("/health/ready")).json()["state"] == "READY"
        answer = await client.post(path, **request())
        assert answer.status_code == 200, answer.text
        check(_answer(answer))


@pytest.mark.slow
@pytest.mark.parametrize("name", PARAMS)
def test_template_in_a_cell_process(
    name: str, built_templates: Callable[[str], Path], cell_process: Any
) -> None:
    path, request, check = CASES[name]
    metadata = str(TEMPLATES / name / "metadata.json")
    with cell_process(built_templates(name), "--metadata", metadata) as cell, cell.client() as c:
        ready = c.get("/health/ready")
        assert ready.status_code == 200, ready.text
        answer = c.post(path, **request())
        assert answer.status_code == 200, answer.text
        check(_answer(answer))
        assert c.get("/").json()["model"] == _metadata(name)["model"]


async def test_python_template_rejects_a_request_without_text(
    built_templates: Callable[[str], Path],
) -> None:
    async with serve(built_templates("python"), _metadata("python")) as client:
        answer = await client.post("/predict", json={"txt": "typo"})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "input_spec_mismatch"
    assert "missing fields ['text']" in answer.json()["error"]["message"]


async def test_python_template_reads_setup_logs_and_extra_words(
    built_templates: Callable[[str], Path],
) -> None:
    async with serve(built_templates("python"), _metadata("python")) as client:
        ready = (await client.get("/health/ready")).json()
        answer = await client.post("/predict", json={"inputs": {"text": "dreadful"}})
    assert "loaded 10 positive and 9 negative words" in ready["setup"]["logs"]
    assert answer.json()["predictions"]["label"] == "negative"


async def test_image_template_takes_the_raw_picture_too(
    built_templates: Callable[[str], Path],
) -> None:
    async with serve(built_templates("image"), _metadata("image")) as client:
        answer = await client.post(
            "/predict", content=_sample_png(), headers={"content-type": "image/png"}
        )
        not_an_image = await client.post(
            "/predict", content=b"hello", headers={"content-type": "image/png"}
        )
    assert answer.status_code == 200, answer.text
    _image(answer.json())
    assert not_an_image.status_code == 500
    assert not_an_image.json()["error"]["code"] == "prediction_failed"
    assert "UnidentifiedImageError" in not_an_image.json()["error"]["message"]


def test_image_sample_script_makes_a_red_picture(tmp_path: Path) -> None:
    from conftest import run_script

    run_script(TEMPLATES / "image" / "make_sample.py", str(tmp_path / "s.png"))
    from PIL import Image

    with Image.open(tmp_path / "s.png") as image:
        r, g, b = image.convert("RGB").getpixel((60, 40))
    assert r > g and r > b
