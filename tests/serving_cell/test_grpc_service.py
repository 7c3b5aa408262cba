"""The cell's gRPC service as tritonclient's gRPC client speaks it: the same answers as
the V2 REST endpoints, errors as gRPC status codes, with numpy in the cell and without."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from conftest import fixture_dir, settled
from tritonclient.grpc.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException

from serving_cell.app import create_app
from serving_cell.protocols import tensors
from serving_cell.protocols.v2grpc import inference_pb2 as pb
from serving_cell.protocols.v2grpc import inference_pb2_grpc as pb_grpc
from serving_cell.settings import CellSettings

ROWS = [[1.5, -2.0, 0.25], [4.0, 8.5, -0.75]]
"""Exactly representable in FP32: JSON and raw bytes carry the very same numbers."""


@dataclass
class GrpcCell:
    rest: httpx.AsyncClient
    triton: InferenceServerClient
    address: str


@asynccontextmanager
async def grpc_cell(
    model_dir: Path, metadata: dict[str, Any], *, wait: bool = True
) -> AsyncIterator[GrpcCell]:
    """An in-process cell with its gRPC service on a free loopback port, in this loop."""
    settings = CellSettings(model_dir, metadata, grpc_address="127.0.0.1:0")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        address = f"127.0.0.1:{app.state.grpc_port}"
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cell") as rest:
            if wait:
                await settled(rest)
            client = InferenceServerClient(address)
            try:
                yield GrpcCell(rest, client, address)
            finally:
                await client.close()


def _rows_input(datatype: str = "FP32") -> triton.InferInput:
    rows = triton.InferInput("rows", [2, 3], datatype)
    rows.set_data_from_numpy(np.array(ROWS, dtype=triton.triton_to_np_dtype(datatype)))
    return rows


def _grpc_outputs(result: Any) -> dict[str, tuple[str, list[int], list[Any]]]:
    outputs = {}
    for output in result.get_response().outputs:
        data = result.as_numpy(output.name).reshape(-1).tolist()
        data = [v.decode() if isinstance(v, bytes) else v for v in data]
        outputs[output.name] = (output.datatype, list(output.shape), data)
    return outputs


async def _agree(cell: GrpcCell) -> dict[str, tuple[str, list[int], list[Any]]]:
    """Infer the same rows over gRPC and V2 REST; both answers must match exactly."""
    result = await cell.triton.infer(
        "tensors", [_rows_input()], request_id="r-7", parameters={"scale": 2}
    )
    assert result.get_response().id == "r-7"
    assert result.get_response().model_name == "tensors"
    assert result.get_response().model_version == "4"
    via_grpc = _grpc_outputs(result)
    rest = await cell.rest.post(
        "/v2/models/tensors/infer",
        json={
            "id": "r-7",
            "parameters": {"scale": 2},
            "inputs": [{"name": "rows", "datatype": "FP32", "shape": [2, 3], "data": ROWS}],
        },
    )
    assert rest.status_code == 200, rest.text
    via_rest = {o["name"]: (o["datatype"], o["shape"], o["data"]) for o in rest.json()["outputs"]}
    assert via_grpc == via_rest
    return via_grpc


EXPECTED = {
    "sums": ("FP64", [2], [-0.5, 23.5]),
    "argmax": ("INT64", [2], [0, 1]),
    "labels": ("BYTES", [2], ["row-0", "row-1"]),
    "doubled": ("FP64", [2, 3], [3.0, -4.0, 0.5, 8.0, 17.0, -1.5]),
}


async def test_triton_grpc_client_gets_what_v2_rest_gets(tmp_path: Path) -> None:
    metadata = {
        "model": "tensors",
        "version": 4,
        "input_spec": [{"name": "rows", "data_type": "array_double"}],
    }
    async with grpc_cell(fixture_dir("tensors_out", tmp_path), metadata) as cell:
        assert await cell.triton.is_server_live()
        assert await cell.triton.is_server_ready()
        assert await cell.triton.is_model_ready("tensors")
        assert (await cell.triton.get_server_metadata()).name == "deployserver-cell"
        meta = await cell.triton.get_model_metadata("tensors", as_json=True)
        rest_meta = (await cell.rest.get("/v2/models/tensors")).json()
        assert meta["name"] == rest_meta["name"] == "tensors"
        assert meta["versions"] == rest_meta["versions"] == ["4"]
        assert meta["platform"] == rest_meta["platform"] == "model"
        assert meta["inputs"] == [{"name": "rows", "datatype": "FP64", "shape": ["-1"]}]
        assert await _agree(cell) == EXPECTED


async def test_without_numpy_the_answers_are_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cell image has no numpy: raw tensors are read and written with struct there."""
    monkeypatch.setattr(tensors, "np", None)
    async with grpc_cell(fixture_dir("tensors_out", tmp_path), {"model": "tensors"}) as cell:
        result = await cell.triton.infer("tensors", [_rows_input()], parameters={"scale": 2})
        assert _grpc_outputs(result) == EXPECTED


async def test_typed_contents_decode_as_raw_bytes_do(tmp_path: Path) -> None:
    """A client may send InferTensorContents instead of raw bytes (tritonclient never does)."""
    async with (
        grpc_cell(fixture_dir("tensors_out", tmp_path), {"model": "tensors"}) as cell,
        grpc.aio.insecure_channel(cell.address) as channel,
    ):
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        tensor = pb.ModelInferRequest.InferInputTensor(
            name="rows",
            datatype="FP64",
            shape=[2, 3],
            contents=pb.InferTensorContents(fp64_contents=[v for row in ROWS for v in row]),
        )
        answer = await stub.ModelInfer(
            pb.ModelInferRequest(
                model_name="tensors",
                inputs=[tensor],
                outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="sums")],
            )
        )
    assert [o.name for o in answer.outputs] == ["sums"]
    assert np.frombuffer(answer.raw_output_contents[0], dtype=np.float64).tolist() == [
        -0.25,
        11.75,
    ]


async def _status(call: Any) -> tuple[str, str]:
    with pytest.raises(InferenceServerException) as caught:
        await call
    return caught.value.status(), caught.value.message()


@pytest.mark.parametrize(
    ("request_kwargs", "words"),
    [
        ({"raw_input_contents": [b"\x00" * 20]}, "cannot reshape"),
        ({"raw_input_contents": [b"\x00" * 24, b"extra"]}, "2 entries for 1 inputs"),
        ({"datatype": "FP128"}, "unknown datatype 'FP128'"),
        ({"datatype": "FP16", "raw_input_contents": []}, "send it in raw_input_contents"),
        ({"shape": [2, -3]}, "non-negative"),
        ({"no_inputs": True}, "at least one input"),
    ],
    ids=["short-raw", "extra-raw", "datatype", "fp16-contents", "shape", "no-inputs"],
)
async def test_bad_tensors_are_invalid_argument(
    tmp_path: Path, request_kwargs: dict[str, Any], words: str
) -> None:
    tensor = pb.ModelInferRequest.InferInputTensor(
        name="rows", datatype=request_kwargs.get("datatype", "FP32"), shape=[2, 3]
    )
    if "shape" in request_kwargs:
        del tensor.shape[:]
        tensor.shape.extend(request_kwargs["shape"])
    request = pb.ModelInferRequest(
        model_name="tensors",
        inputs=[] if request_kwargs.get("no_inputs") else [tensor],
        raw_input_contents=request_kwargs.get("raw_input_contents", [b"\x00" * 24]),
    )
    async with (
        grpc_cell(fixture_dir("tensors_out", tmp_path), {"model": "tensors"}) as cell,
        grpc.aio.insecure_channel(cell.address) as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert words in str(caught.value.details())
        # a bad request costs the cell nothing: the next good one is answered
        assert _grpc_outputs(await cell.triton.infer("tensors", [_rows_input()]))["argmax"]


async def test_another_models_name_is_not_found(tmp_path: Path) -> None:
    async with grpc_cell(fixture_dir("tensors_out", tmp_path), {"model": "tensors"}) as cell:
        for call in (
            cell.triton.infer("other", [_rows_input()]),
            cell.triton.is_model_ready("other"),
            cell.triton.get_model_metadata("other"),
        ):
            status, message = await _status(call)
            assert status == "StatusCode.NOT_FOUND"
            assert "this cell serves 'tensors'" in message


async def test_a_script_that_raises_is_internal_with_its_message(tmp_path: Path) -> None:
    async with grpc_cell(fixture_dir("raises_in_predict", tmp_path), {"model": "raiser"}) as cell:
        numbers = triton.InferInput("x", [2], "INT64")
        numbers.set_data_from_numpy(np.array([3, -1], dtype=np.int64))
        status, message = await _status(cell.triton.infer("raiser", [numbers]))
        assert status == "StatusCode.INTERNAL"
        assert message == "ValueError: negative numbers are not allowed"
        numbers.set_data_from_numpy(np.array([3, 1], dtype=np.int64))
        result = await cell.triton.infer("raiser", [numbers])
        assert result.as_numpy("predictions").tolist() == [6, 2]


async def test_a_loading_model_is_unavailable_and_not_ready(tmp_path: Path) -> None:
    folder = fixture_dir("slow_load", tmp_path)
    async with grpc_cell(folder, {"model": "slow"}, wait=False) as cell:
        assert await cell.triton.is_server_live()
        assert not await cell.triton.is_server_ready()
        assert not await cell.triton.is_model_ready("slow")
        numbers = triton.InferInput("x", [1], "INT64")
        numbers.set_data_from_numpy(np.array([1], dtype=np.int64))
        status, message = await _status(cell.triton.infer("slow", [numbers]))
        assert status == "StatusCode.UNAVAILABLE"
        assert "is still loading" in message
        (folder / "release").touch()
        await settled(cell.rest)
        assert await cell.triton.is_model_ready("slow")


async def test_a_cell_whose_grpc_cannot_load_still_serves_http(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A deployment's requirements may replace protobuf with one the stubs cannot run on."""
    monkeypatch.setitem(sys.modules, "serving_cell.protocols.v2grpc.servicer", None)
    settings = CellSettings(
        fixture_dir("tensors_out", tmp_path), {"model": "tensors"}, grpc_address="127.0.0.1:0"
    )
    app = create_app(settings)
    with caplog.at_level(logging.ERROR, logger="serving_cell"):
        async with app.router.lifespan_context(app):
            assert app.state.grpc_port is None
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://cell") as rest:
                await settled(rest)
                answer = await rest.post("/predict", json={"inputs": [[1, 2]]})
                assert answer.json()["predictions"]["sums"] == [3]
    assert "gRPC is off: its modules do not load here" in caplog.text
