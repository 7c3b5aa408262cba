"""GET /health: the server's own liveness, open to everyone."""

from __future__ import annotations

from fastapi import APIRouter

from deployserver.api.deps import PUBLIC

router = APIRouter(tags=["health"], dependencies=[PUBLIC])


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
