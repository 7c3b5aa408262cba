"""The server's gRPC port: the Open Inference Protocol's service, each model call routed by
its model name to the model's active cell, as /serve routes HTTP.

Model calls (ModelReady, ModelMetadata, ModelInfer) go on as they came, serialized: the
gateway reads the model's name from the request and nothing else, checks the caller's
token (``authorization: Bearer <token>`` metadata; the 'predict' scope unless the model
is public, as /serve), and sends the bytes to the cell's own gRPC service, under a
deadline, on one pooled channel per cell. The caller's metadata (its token included) is
not passed on. Server calls (ServerLive, ServerReady, ServerMetadata) answer for this
server. The protocol's other methods are UNIMPLEMENTED. Message sizes and the number of
calls at once are the listener's limits (``grpcserver``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn

import grpc

from deployserver import __version__
from deployserver.access.authorize import authorize
from deployserver.errors import DeployServerError, NotAuthenticated, PermissionDenied
from deployserver.serving import grpcwire
from deployserver.serving.balance import Load
from deployserver.serving.proxy import MODEL_NAME
from deployserver.serving.routetable import Replica, Route
from serving_cell.protocols.v2grpc import inference_pb2 as pb

log = logging.getLogger("deployserver.serving.grpc")
SERVICE = "inference.GRPCInferenceService"
MODEL_METHODS = ("ModelReady", "ModelMetadata", "ModelInfer")
SERVER_NAME = "deployserver"
CHANNELS = 1024
"""Cells with an open channel at once; the least recently used is closed past it."""
NOT_READY = pb.ModelReadyResponse(ready=False).SerializeToString()


def choose_cell(route: Route, load: Load, tried: Sequence[str] = ()) -> Replica | None:
    """The replica that answers a call for ``route``'s model, as /serve chooses (of two
    at random, the one answering fewer) among those serving gRPC; None when none is."""
    return load.choose([r for r in route.replicas if r.grpc_address], tried)


Context = grpc.aio.ServicerContext[bytes, bytes]
"""A call's context: requests and answers pass through as bytes, never decoded."""


def _token(context: Context) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            kind, _, token = value.partition(" ")
            return token.strip() if kind.lower() == "bearer" and token.strip() else None
    return None


def _unreached(exc: grpc.aio.AioRpcError) -> bool:
    """Whether the call never reached the cell (so sending it elsewhere cannot run it twice)."""
    return exc.code() == grpc.StatusCode.UNAVAILABLE and "failed to connect" in (
        exc.details() or ""
    )


class CellChannels:
    """One channel per cell address, shared by every call to that cell."""

    def __init__(self, max_message_bytes: int, limit: int = CHANNELS) -> None:
        self.options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
        ]
        self.limit = limit
        self._open: OrderedDict[str, grpc.aio.Channel] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._open)

    def get(self, address: str) -> grpc.aio.Channel:
        channel = self._open.get(address)
        if channel is None:
            channel = self._open[address] = grpc.aio.insecure_channel(address, self.options)
            while len(self._open) > self.limit:
                self._close(self._open.popitem(last=False)[1])
        self._open.move_to_end(address)
        return channel

    def drop(self, address: str) -> None:
        """Close the channel to a cell that is gone."""
        channel = self._open.pop(address, None)
        if channel is not None:
            self._close(channel)

    def _close(self, channel: grpc.aio.Channel, grace: float | None = 30.0) -> None:
        # calls still on it finish first (within the grace): it is no longer handed out
        task = asyncio.ensure_future(channel.close(grace))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        while self._open:
            self._close(self._open.popitem()[1], grace=None)
        await asyncio.gather(*self._closing, return_exceptions=True)


class GrpcGateway:
    """The protocol's methods for the listener: server calls answered here, model calls
    forwarded to cells. ``state`` is the app's state (routes, tokens, settings)."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self.settings = state.settings
        self.channels = CellChannels(self.settings.grpc_max_message_bytes)

    def handler(self) -> grpc.GenericRpcHandler:
        handlers = {
            "ServerLive": _typed(self.server_live, pb.ServerLiveRequest),
            "ServerReady": _typed(self.server_ready, pb.ServerReadyRequest),
            "ServerMetadata": _typed(self.server_metadata, pb.ServerMetadataRequest),
            # model calls stay bytes both ways: no (de)serializer
            **{
                name: grpc.unary_unary_rpc_method_handler(self._forwarder(name))
                for name in MODEL_METHODS
            },
        }
        return grpc.method_handlers_generic_handler(SERVICE, handlers)

    async def server_live(self, request: Any, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: Any, context: Any) -> pb.ServerReadyResponse:
        # the listener runs only inside the server's lifespan: answering is being ready
        return pb.ServerReadyResponse(ready=True)

    async def server_metadata(self, request: Any, context: Any) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=__version__)

    def _forwarder(self, method: str) -> Callable[[bytes, Any], Awaitable[bytes]]:
        path = f"/{SERVICE}/{method}"

        async def forward(request: bytes, context: Context) -> bytes:
            return await self.forward(path, request, context)

        return forward

    async def forward(self, path: str, request: bytes, context: Context) -> bytes:
        """Route one model call to its cell and answer what the cell answered."""
        try:
            model = grpcwire.model_name(request)
        except grpcwire.MalformedMessage as exc:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"unreadable request: {exc}")
        if not model:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "the request names no model")
        routes = self.state.routes
        route = await routes.resolve(model) if MODEL_NAME.match(model) else None
        if route is None:
            await _abort(context, grpc.StatusCode.NOT_FOUND, f"no model {model!r}")
        authorized = False
        load: Load = self.state.load
        tried: list[str] = []
        for _attempt in (1, 2, 3):
            if not route.public and not authorized:  # again for a new version made private
                await self._authorize(context)
                authorized = True
            if not route.replicas and route.wakeable and not path.endswith("/ModelReady"):
                try:  # paused or scaled to zero: held while it wakes, as /serve does
                    route = await self.state.waker.ready_route(route)
                except DeployServerError as exc:
                    await _abort(context, grpc.StatusCode.UNAVAILABLE, exc.message)
            replica = choose_cell(route, load, tried)
            if replica is None or replica.grpc_address is None:
                if path.endswith("/ModelReady"):
                    return NOT_READY  # a known model without a ready cell is not ready
                await _abort(
                    context,
                    grpc.StatusCode.UNAVAILABLE,
                    f"model {model!r} has no ready cell serving gRPC",
                )
            address = replica.grpc_address
            timeout = self._timeout(context)
            call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]
            call = self.channels.get(address).unary_unary(path)
            try:
                with load.request(route.deploy_id, replica.cell_id):
                    answer: bytes = await call(request, timeout=timeout)
                return answer
            except grpc.aio.AioRpcError as exc:
                if _unreached(exc):
                    self.channels.drop(address)
                    load.eject(replica.cell_id)
                    routes.invalidate(model)
                    tried.append(replica.cell_id)
                    fresh = await routes.resolve(model)
                    if fresh is not None and choose_cell(fresh, load, tried) is not None:
                        route = fresh  # another replica, or the new version's after a switch
                        continue
                await _abort(context, *self._status_of(exc, model, timeout))
        raise AssertionError("unreachable: the loop returns or aborts")  # pragma: no cover

    async def _authorize(self, context: Context) -> None:
        try:
            await authorize(
                self.state.token_cache,
                self.state.sessions,
                _token(context),
                "predict",
                self.state.clock(),
                what="gRPC",
                sent_as="the metadata 'authorization: Bearer <token>'",
            )
        except NotAuthenticated as exc:
            await _abort(context, grpc.StatusCode.UNAUTHENTICATED, exc.message)
        except PermissionDenied as exc:
            await _abort(context, grpc.StatusCode.PERMISSION_DENIED, exc.message)

    def _timeout(self, context: Context) -> float:
        """The server's limit, or the caller's deadline when that comes first."""
        remaining = context.time_remaining()
        limit = float(self.settings.grpc_timeout)
        return limit if remaining is None else min(limit, max(remaining, 0.0))

    def _status_of(
        self, exc: grpc.aio.AioRpcError, model: str, timeout: float
    ) -> tuple[grpc.StatusCode, str]:
        """What the caller is told of a call the cell failed: the cell's own errors as
        they are, the ways of reaching it in this server's words."""
        code = exc.code()
        if _unreached(exc):
            return code, f"the cell of {model!r} does not answer"
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return code, f"the cell of {model!r} did not answer within {timeout:g} s"
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in (
            exc.details() or ""
        ):
            limit = self.settings.grpc_max_message_bytes
            return code, (
                f"the cell's answer is larger than {limit} bytes "
                "(DEPLOYSERVER_GRPC_MAX_MESSAGE_BYTES)"
            )
        return code, exc.details() or code.name


def _typed(
    behaviour: Callable[[Any, Any], Awaitable[Any]], request_type: Any
) -> grpc.RpcMethodHandler[Any, Any]:
    return grpc.unary_unary_rpc_method_handler(
        behaviour,
        request_deserializer=request_type.FromString,
        response_serializer=lambda message: message.SerializeToString(),
    )


async def _abort(context: Context, code: grpc.StatusCode, details: str) -> NoReturn:
    await context.abort(code, details)
    raise AssertionError("unreachable: abort() raises")  # pragma: no cover
