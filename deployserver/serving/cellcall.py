"""One asynchronous prediction's call to its cell: the answer streamed into storage as it
arrives (never held whole), or the reason it failed."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import anyio

from deployserver.config import Settings
from deployserver.domain import PredictionStatus
from deployserver.serving.cellpath import DEFAULT_PATH, is_default
from deployserver.serving.results import (
    CHUNK,
    MEMBER,
    AnswerRefused,
    AnswerSink,
    StoredAnswer,
)
from deployserver.store.predictions import Claim

ERROR_TEXT = 2000
"""Bytes of a failed answer kept as the prediction's error."""


def cell_session(timeout: float) -> aiohttp.ClientSession:
    """The pooled client asynchronous predictions call cells with (create it inside the
    running loop)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1000, keepalive_timeout=30),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=2, sock_read=timeout),
        auto_decompress=False,
        # one session serves every prediction and every cell: a cookie one cell set
        # must never be sent on anyone's next request (to it or to another cell)
        cookie_jar=aiohttp.DummyCookieJar(),
    )


@dataclass(frozen=True)
class Outcome:
    """How a prediction ended: its status, the deployment that answered, and its stored
    result or its error."""

    status: PredictionStatus
    deploy_id: str | None
    stored: StoredAnswer | None = None
    error: str | None = None


class CellDown(Exception):
    """The request did not reach a cell: it goes back to the queue."""


async def call_cell(
    cells: aiohttp.ClientSession,
    url: str,
    deploy_id: str | None,
    claim: Claim,
    settings: Settings,
    room: Callable[[Claim], tuple[int, str]],
) -> Outcome:
    """POST ``claim`` to the cell at ``url`` and store its answer; ``room(claim)`` says how
    many bytes the storage quotas leave (asked only for an answer too large to keep inline)."""
    sink: AnswerSink | None = None
    stored = None
    try:  # the data path's pooled client (aiohttp), as /serve uses
        async with cells.post(
            f"{url}/{claim.path or DEFAULT_PATH}",
            data=claim.body,
            headers={"content-type": claim.content_type},
            timeout=aiohttp.ClientTimeout(total=settings.async_timeout),
        ) as resp:
            if resp.status != 200:
                return Outcome(PredictionStatus.FAILED, deploy_id, error=await _error_of(resp))
            sink = _sink(settings, claim, resp)
            async for chunk in resp.content.iter_chunked(CHUNK):
                if sink.in_file:  # writes and JSON checks run off the event loop
                    await anyio.to_thread.run_sync(sink.feed, chunk)
                    continue
                sink.feed(chunk)
                if sink.needs_file:  # only now are the storage quotas worth a query
                    left, why = await anyio.to_thread.run_sync(room, claim)
                    await anyio.to_thread.run_sync(sink.open_file, left, why)
            if sink.in_memory:  # a small JSON answer: parsed here, no thread hop
                stored = sink.finish()
            else:
                stored = await anyio.to_thread.run_sync(sink.finish)
            return Outcome(PredictionStatus.SUCCEEDED, deploy_id, stored=stored)
    except AnswerRefused as exc:
        return Outcome(PredictionStatus.FAILED, deploy_id, error=exc.message)
    except (
        aiohttp.ClientConnectorError,
        aiohttp.ConnectionTimeoutError,
        aiohttp.ServerDisconnectedError,
    ) as exc:
        raise CellDown(f"the cell of {claim.model!r} is unreachable: {exc}") from exc
    except (TimeoutError, aiohttp.ClientError) as exc:
        return Outcome(
            PredictionStatus.FAILED, deploy_id, error=f"the cell did not answer: {exc or 'timeout'}"
        )
    except OSError as exc:  # writing the answer: a full disk, say (after aiohttp's OSErrors)
        return Outcome(
            PredictionStatus.FAILED,
            deploy_id,
            error=f"the answer could not be stored: {exc.strerror}",
        )
    finally:
        if sink is not None and stored is None:
            sink.discard()  # a refused or cut answer leaves no file behind


def _sink(settings: Settings, claim: Claim, resp: aiohttp.ClientResponse) -> AnswerSink:
    limit = settings.max_prediction_result_bytes
    too_large = (
        f"the answer is larger than {limit} bytes (DEPLOYSERVER_MAX_PREDICTION_RESULT_BYTES)"
    )
    if resp.content_length is not None and resp.content_length > limit:
        raise AnswerRefused(too_large)  # refused before a byte of it is read
    return AnswerSink(
        settings.data_dir,
        claim.request_id,
        media_type=resp.headers.get("content-type", ""),
        limit=limit,
        too_large=too_large,
        # /predict's answer is {"predictions": ...}: that member is the result; any other
        # path's answer is in its protocol's own shape, and kept whole
        member=MEMBER if is_default(claim.path or DEFAULT_PATH) else None,
    )


async def _error_of(resp: aiohttp.ClientResponse) -> str:
    """The error of a failed answer, from its first bytes only (it could be any size)."""
    head = b""
    while len(head) < ERROR_TEXT:
        chunk = await resp.content.read(ERROR_TEXT - len(head))
        if not chunk:
            break
        head += chunk
    text = head.decode("utf-8", errors="replace")
    message = text
    try:
        answer = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
        answer = None
    if isinstance(answer, dict):
        message = _error_message(answer) or message
    return f"the cell answered {resp.status}: {message}"


def _error_message(answer: dict[str, Any]) -> str | None:
    """The message of an error answer in any of the cell's protocols' shapes."""
    error, status = answer.get("error"), answer.get("status")
    if isinstance(error, dict):  # ours
        return str(error.get("message"))
    if isinstance(error, str):  # V2
        return error
    if isinstance(answer.get("message"), str):  # MLflow
        return str(answer["message"])
    if isinstance(status, dict) and "info" in status:  # Seldon
        return str(status["info"])
    if isinstance(answer.get("detail"), str):  # BudgetML
        return str(answer["detail"])
    return None
