"""The cell's gRPC service: the Open Inference Protocol over gRPC, answered by the same
inference code as the V2 REST endpoints (``protocols.v2``), so both give the same outputs.

It runs in the cell's own event loop beside the HTTP server, on a port of its own. The
cell is reached only through the control plane, which limits message sizes, deadlines
and concurrency before a call gets here; the cell itself takes any size it is handed.
Errors are gRPC status codes with the cell's message as details.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from serving_cell import __version__
from serving_cell.cell import Cell
from serving_cell.errors import CellError, ModelNotFound
from serving_cell.protocols import v2
from serving_cell.protocols.tensors import TensorError
from serving_cell.protocols.v2grpc import contents
from serving_cell.protocols.v2grpc import inference_pb2 as pb
from serving_cell.protocols.v2grpc import inference_pb2_grpc as pb_grpc

logger = logging.getLogger("serving_cell")

CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}
"""The gRPC code of each HTTP status the cell's errors carry; any other is INTERNAL."""
UNLIMITED = -1
SERVER_NAME = "deployserver-cell"

Response = TypeVar("Response")


def status_of(exc: Exception) -> tuple[grpc.StatusCode, str]:
    """The gRPC code and details an error of the cell is answered with."""
    if isinstance(exc, TensorError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, CellError):
        return CODES.get(exc.status_code, grpc.StatusCode.INTERNAL), exc.message
    return grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}"


async def _answer(
    work: Callable[[], Awaitable[Response]], context: grpc.aio.ServicerContext[Any, Any]
) -> Response:
    try:
        return await work()
    except (CellError, TensorError) as exc:
        code, details = status_of(exc)
    except Exception as exc:
        logger.exception("gRPC call failed", exc_info=exc)
        code, details = status_of(exc)
    await context.abort(code, details)
    raise AssertionError("unreachable: abort() raises")  # pragma: no cover


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    """The six calls of the protocol for the one model of this cell."""

    def __init__(self, cell: Cell) -> None:
        self.cell = cell

    def _named(self, name: str) -> Cell:
        if name != self.cell.name:
            raise ModelNotFound(f"model {name!r} not found; this cell serves {self.cell.name!r}")
        return self.cell

    async def ServerLive(self, request: Any, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.cell.health.ready)

    async def ServerMetadata(self, request: Any, context: Any) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=__version__)

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: Any
    ) -> pb.ModelReadyResponse:
        async def work() -> pb.ModelReadyResponse:
            return pb.ModelReadyResponse(ready=self._named(request.name).health.ready)

        return await _answer(work, context)

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Any
    ) -> pb.ModelMetadataResponse:
        async def work() -> pb.ModelMetadataResponse:
            meta = v2.metadata_of(self._named(request.name))
            return pb.ModelMetadataResponse(
                name=meta["name"],
                versions=meta["versions"],
                platform=meta["platform"],
                inputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in meta["inputs"]],
                outputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in meta["outputs"]],
            )

        return await _answer(work, context)

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: Any
    ) -> pb.ModelInferResponse:
        async def work() -> pb.ModelInferResponse:
            cell = self._named(request.model_name)
            cell.require_ready()
            values = contents.read_inputs(request)
            parameters = contents.parameters_of(request.parameters)
            requested = [output.name for output in request.outputs]
            body = await v2.run_inference(cell, values, parameters, requested)
            outputs, raws = contents.write_outputs(body["outputs"])
            return pb.ModelInferResponse(
                model_name=body["model_name"],
                model_version=body.get("model_version", ""),
                id=request.id,
                outputs=outputs,
                raw_output_contents=raws,
            )

        return await _answer(work, context)


async def start_server(cell: Cell, address: str) -> tuple[grpc.aio.Server, int]:
    """Serve ``cell`` over gRPC on ``address`` (``host:port``; port 0 picks a free one)
    in the running event loop; returns the started server and the port it took."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", UNLIMITED),
            ("grpc.max_send_message_length", UNLIMITED),
        ]
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(  # type: ignore[no-untyped-call]
        InferenceService(cell), server
    )  # generated code, untyped
    port = server.add_insecure_port(address)
    await server.start()
    return server, port
