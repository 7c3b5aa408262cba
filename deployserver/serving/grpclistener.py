"""The gRPC listener: the gateway's service on ``DEPLOYSERVER_GRPC_PORT``, in the HTTP
server's process and event loop, started and stopped by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc

from deployserver.serving.grpcgateway import GrpcGateway


@dataclass
class GrpcListener:
    server: grpc.aio.Server
    gateway: GrpcGateway
    port: int
    """The port taken (the one configured, or a free one for port 0)."""

    async def stop(self, grace: float) -> None:
        """Refuse new calls, give those in flight ``grace`` seconds, close the channels."""
        await self.server.stop(grace)
        await self.gateway.channels.close()


async def start_listener(state: Any) -> GrpcListener:
    """Listen on ``settings.host`` and ``settings.grpc_port``; a port that cannot be bound
    fails the server's start. Requests and answers above ``grpc_max_message_bytes`` and
    calls beyond ``grpc_max_concurrency`` at once are refused (RESOURCE_EXHAUSTED) by gRPC
    itself, before any of our code runs."""
    settings = state.settings
    limit = settings.grpc_max_message_bytes
    server = grpc.aio.server(
        maximum_concurrent_rpcs=settings.grpc_max_concurrency,
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
        ],
    )
    gateway = GrpcGateway(state)
    server.add_generic_rpc_handlers((gateway.handler(),))
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    port = server.add_insecure_port(f"{host}:{settings.grpc_port}")
    await server.start()
    return GrpcListener(server, gateway, port)
