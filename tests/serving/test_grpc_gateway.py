"""The server's gRPC gateway against a stand-in cell: what it forwards (the request's very
bytes, never the caller's token), what it answers itself, and its limits (deadline,
message size, calls at once), each in gRPC's own status codes."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from deployserver.config import Settings
from deployserver.main import create_app
from deployserver.serving.routetable import Replica, Route
from serving_cell.protocols.v2grpc import inference_pb2 as pb
from serving_cell.protocols.v2grpc import inference_pb2_grpc as pb_grpc
from tests.fakes import FakeRuntime
from tests.helpers import ADMIN_TOKEN, bearer, multipart, package_files, serve, wait_for_status

SERVICE = "inference.GRPCInferenceService"
LIMIT = 64 * 1024
RELEASE_WAIT = 60
"""How long a held call waits for the test to release it: a guard, not a timing."""


@dataclass
class StandInCell:
    """A gRPC server playing a model's cell: records what reaches it, answers as told."""

    behaviour: str = "answer"
    seen: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)
    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def handle(self, method: str, request: bytes, context: grpc.ServicerContext) -> bytes:
        metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        self.seen.append((method, request, metadata))
        if self.behaviour == "hold":
            self.entered.set()
            self.release.wait(RELEASE_WAIT)
        if self.behaviour == "refuse":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "input 'x': a reason of the cell")
        if method == "ModelReady":
            return pb.ModelReadyResponse(ready=True).SerializeToString()
        if method == "ModelMetadata":
            return pb.ModelMetadataResponse(name="m", platform="stand-in").SerializeToString()
        infer = pb.ModelInferRequest.FromString(request)
        size = 2 * LIMIT if self.behaviour == "huge" else len(infer.raw_input_contents[0])
        answer = pb.ModelInferResponse(
            model_name=infer.model_name, id=infer.id, raw_output_contents=[b"\x01" * size]
        )
        return answer.SerializeToString()

    def handler(self) -> grpc.GenericRpcHandler:
        def method(name: str) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(
                lambda request, context: self.handle(name, request, context)
            )

        names = ("ModelReady", "ModelMetadata", "ModelInfer")
        return grpc.method_handlers_generic_handler(SERVICE, {n: method(n) for n in names})


@pytest.fixture
def stand_in() -> Iterator[tuple[StandInCell, str]]:
    cell = StandInCell()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((cell.handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield cell, f"127.0.0.1:{port}"
    finally:
        cell.release.set()
        server.stop(None)


@dataclass
class Gateway:
    api: httpx.Client
    address: str
    runtime: FakeRuntime
    state: Any

    def deploy(self, model: str, **meta: Any) -> None:
        files = multipart({"model": model, **meta}, package_files())
        up = self.api.post("/api/v1/deployments", files=files).json()
        wait_for_status(self.api, up["deploy_id"], "ready")


@contextlib.contextmanager
def gateway(
    tmp_path: Path, database_url: str, cell_address: str | None, **overrides: Any
) -> Iterator[Gateway]:
    """The server on the fake runtime, its gRPC port on; its cells say they serve gRPC
    at ``cell_address``."""
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        admin_token=ADMIN_TOKEN,
        reconcile_interval=0.1,
        grpc_port=0,
        grpc_max_message_bytes=LIMIT,
        **overrides,
    )
    runtime = FakeRuntime()
    runtime.grpc_address = cell_address
    with serve(runtime.app()) as cells_url:
        runtime.base_url = cells_url
        app = create_app(settings, runtime=runtime)
        with (
            serve(app) as url,
            httpx.Client(base_url=url, headers=bearer(ADMIN_TOKEN), timeout=60) as api,
        ):
            yield Gateway(api, f"127.0.0.1:{app.state.ds.grpc_port}", runtime, app.state.ds)


def _infer(model: str, raw: bytes = b"\x00" * 8, request_id: str = "") -> pb.ModelInferRequest:
    tensor = pb.ModelInferRequest.InferInputTensor(name="x", datatype="UINT8", shape=[len(raw)])
    return pb.ModelInferRequest(
        model_name=model, id=request_id, inputs=[tensor], raw_input_contents=[raw]
    )


def _code(call: Any, *args: Any, **kwargs: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)
    return caught.value.code(), caught.value.details()


@contextlib.contextmanager
def stub(address: str) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(address) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def test_server_calls_answer_for_the_server(tmp_path: Path, database_url: str) -> None:
    with (
        gateway(tmp_path, database_url, None) as gw,
        triton.InferenceServerClient(gw.address) as client,
    ):
        assert client.is_server_live() and client.is_server_ready()
        metadata = client.get_server_metadata()
        assert metadata.name == "deployserver" and metadata.version
        with pytest.raises(InferenceServerException) as caught:
            client.get_model_config("m")  # a method of Triton's beyond the protocol
        assert caught.value.status() == "StatusCode.UNIMPLEMENTED"


def test_model_calls_reach_the_cell_as_they_were_sent(
    tmp_path: Path, database_url: str, stand_in: tuple[StandInCell, str]
) -> None:
    cell, address = stand_in
    with gateway(tmp_path, database_url, address) as gw, stub(gw.address) as calls:
        gw.deploy("m")
        request = _infer("m", b"abcdefgh", request_id="r-1")
        token = [("authorization", f"Bearer {ADMIN_TOKEN}"), ("x-trace", "t-1")]
        answer = calls.ModelInfer(request, metadata=token)
        assert (answer.model_name, answer.id, answer.raw_output_contents) == (
            "m",
            "r-1",
            [b"\x01" * 8],
        )
        assert calls.ModelReady(pb.ModelReadyRequest(name="m"), metadata=token).ready
        meta = calls.ModelMetadata(pb.ModelMetadataRequest(name="m"), metadata=token)
        assert meta.platform == "stand-in"
    methods = [method for method, _, _ in cell.seen]
    assert methods == ["ModelInfer", "ModelReady", "ModelMetadata"]
    assert cell.seen[0][1] == request.SerializeToString()  # the very bytes, not re-encoded
    for _, _, metadata in cell.seen:
        assert "authorization" not in metadata and ADMIN_TOKEN not in metadata.values()
        assert "x-trace" not in metadata


def test_private_models_need_the_predict_scope(
    tmp_path: Path, database_url: str, stand_in: tuple[StandInCell, str]
) -> None:
    cell, address = stand_in
    with gateway(tmp_path, database_url, address) as gw, stub(gw.address) as calls:
        gw.deploy("m")
        code, details = _code(calls.ModelInfer, _infer("m"))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert details == (
            "gRPC needs a token with the 'predict' scope, "
            "in the metadata 'authorization: Bearer <token>'"
        )
        reader = gw.api.post("/api/v1/tokens", json={"name": "r", "scopes": ["read"]}).json()
        code, _ = _code(
            calls.ModelReady,
            pb.ModelReadyRequest(name="m"),
            metadata=[("authorization", f"Bearer {reader['token']}")],
        )
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert cell.seen == []  # nothing reached the cell
        predictor = gw.api.post("/api/v1/tokens", json={"name": "p", "scopes": ["predict"]})
        auth = [("authorization", f"bearer {predictor.json()['token']}")]
        assert calls.ModelInfer(_infer("m"), metadata=auth).model_name == "m"


def test_requests_that_name_no_known_model(tmp_path: Path, database_url: str) -> None:
    with gateway(tmp_path, database_url, None) as gw, grpc.insecure_channel(gw.address) as ch:
        infer = ch.unary_unary(f"/{SERVICE}/ModelInfer")  # bytes both ways
        for raw, code, words in (
            (b"\x0a\xff", grpc.StatusCode.INVALID_ARGUMENT, "unreadable request"),
            (b"\x08\x01", grpc.StatusCode.INVALID_ARGUMENT, "field 1 is not a string"),
            (_infer("").SerializeToString(), grpc.StatusCode.INVALID_ARGUMENT, "names no model"),
            (_infer("Not/A-Name").SerializeToString(), grpc.StatusCode.NOT_FOUND, "no model"),
            (_infer("nobody").SerializeToString(), grpc.StatusCode.NOT_FOUND, "no model 'nobody'"),
        ):
            got, details = _code(infer, raw)
            assert (got, words in details) == (code, True), details


def test_a_model_whose_cell_serves_no_grpc_is_unavailable(
    tmp_path: Path, database_url: str
) -> None:
    with gateway(tmp_path, database_url, None) as gw, stub(gw.address) as calls:
        gw.deploy("m", public=True)
        code, details = _code(calls.ModelInfer, _infer("m"))
        assert code == grpc.StatusCode.UNAVAILABLE
        assert details == "model 'm' has no ready cell serving gRPC"
        assert calls.ModelReady(pb.ModelReadyRequest(name="m")).ready is False


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_cell_that_does_not_answer_is_unavailable(tmp_path: Path, database_url: str) -> None:
    down = f"127.0.0.1:{_closed_port()}"
    with gateway(tmp_path, database_url, down) as gw, stub(gw.address) as calls:
        gw.deploy("m", public=True)
        code, details = _code(calls.ModelInfer, _infer("m"))
        assert (code, details) == (grpc.StatusCode.UNAVAILABLE, "the cell of 'm' does not answer")


def test_the_cells_own_errors_pass_as_they_are(
    tmp_path: Path, database_url: str, stand_in: tuple[StandInCell, str]
) -> None:
    cell, address = stand_in
    cell.behaviour = "refuse"
    with gateway(tmp_path, database_url, address) as gw, stub(gw.address) as calls:
        gw.deploy("m", public=True)
        code, details = _code(calls.ModelInfer, _infer("m"))
        assert (code, details) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "input 'x': a reason of the cell",
        )


def test_a_cell_slower_than_the_servers_deadline(
    tmp_path: Path, database_url: str, stand_in: tuple[StandInCell, str]
) -> None:
    cell, address = stand_in
    cell.behaviour = "hold"
    with (
        gateway(tmp_path, database_url, address, grpc_timeout=0.5) as gw,
        stub(gw.address) as calls,
    ):
        gw.deploy("m", public=True)
        code, details = _code(calls.ModelInfer, _infer("m"))  # the caller set no deadline
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert details == "the cell of 'm' did not answer within 0.5 s"


def test_calls_beyond_the_concurrency_limit_are_refused(
    tmp_path: Path, database_url: str, stand_in: tuple[StandInCell, str]
) -> None:
    cell, address = stand_in
    cell.behaviour = "hold"
    with (
        gateway(tmp_path, database_url, address, grpc_max_concurrency=1) as gw,
        stub(gw.address) as calls,
    ):
        gw.deploy("m", public=True)
        held = calls.ModelInfer.future(_infer("m", request_id="first"))
        assert cell.entered.wait(RELEASE_WAIT), "the first call never reached the cell"
        code, _ = _code(calls.ModelInfer, _infer("m", request_id="second"))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        cell.release.set()
        assert held.result(RELEASE_WAIT).id == "first"
        cell.behaviour = "answer"
        assert calls.ModelInfer(_infer("m", request_id="third")).id == "third"
    assert len(cell.seen) == 2  # the refused one never reached the cell


def test_messages_above_the_limit_are_refused(
    tmp_path: Path, database_url: str, stand_in: tuple[StandInCell, str]
) -> None:
    cell, address = stand_in
    with gateway(tmp_path, database_url, address) as gw, stub(gw.address) as calls:
        gw.deploy("m", public=True)
        code, _ = _code(calls.ModelInfer, _infer("m", b"\x00" * (LIMIT + 1)))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert cell.seen == []
        cell.behaviour = "huge"
        code, details = _code(calls.ModelInfer, _infer("m"))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details == (
            f"the cell's answer is larger than {LIMIT} bytes (DEPLOYSERVER_GRPC_MAX_MESSAGE_BYTES)"
        )


def _stale_first(gw: Gateway, stale: Route) -> None:
    """The route table answers ``stale`` once, then the truth: a call that looked its model
    up just before the model moved to another cell."""
    real = gw.state.routes.resolve
    answers = iter([stale])

    async def resolve(model: str) -> Route | None:
        return next(answers, None) or await real(model)

    gw.state.routes.resolve = resolve


@pytest.mark.parametrize("public", [True, False], ids=["still-public", "now-private"])
def test_a_call_for_a_cell_just_replaced_goes_to_the_new_one(
    tmp_path: Path, database_url: str, stand_in: tuple[StandInCell, str], public: bool
) -> None:
    cell, address = stand_in
    closed = f"127.0.0.1:{_closed_port()}"
    gone = Route("m", None, True, 0.0, (Replica("gone", f"http://{closed}", closed),))
    with gateway(tmp_path, database_url, address) as gw, stub(gw.address) as calls:
        gw.deploy("m", public=public)
        _stale_first(gw, gone)
        if public:
            assert calls.ModelInfer(_infer("m", request_id="moved")).id == "moved"
            assert len(cell.seen) == 1
        else:  # the new version is private: the token is asked for before it is called
            code, _ = _code(calls.ModelInfer, _infer("m"))
            assert code == grpc.StatusCode.UNAUTHENTICATED
            assert cell.seen == []
