"""One loaded model: loads it in the background and guards every prediction."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import anyio.to_thread

from serving_cell.batching import Batcher, BatchLimits, check_contract
from serving_cell.contracts import Adapter, Call
from serving_cell.errors import ModelNotReady, PredictionFailed, describe
from serving_cell.loader import build_adapter
from serving_cell.settings import CellSettings
from serving_cell.state import Health, State
from serving_cell.streaming import collect, is_stream

logger = logging.getLogger("serving_cell")


class Cell:
    """The model behind every endpoint; the protocols only translate HTTP to ``Call``."""

    def __init__(self, settings: CellSettings) -> None:
        self.settings = settings
        self.health = Health()
        self.adapter: Adapter | None = None
        self.load_seconds: float | None = None
        self.batcher: Batcher | None = None
        """Set at load when the metadata asks for batching."""
        self.batch_observers: list[Callable[[int], None]] = []
        """Told the size of each batch (the cell's metrics)."""

    @property
    def name(self) -> str:
        return self.settings.model_name

    async def load(self) -> None:
        """Import the script and run its load(); a failure is recorded, never raised.

        The cell must stay up after a failed load so the control plane can read why.
        """
        started = time.perf_counter()
        try:
            with self.health.capture_output():
                limits = BatchLimits.from_metadata(self.settings.metadata)
                # Importing the script runs its top level (import torch, ...): off the loop.
                adapter = await anyio.to_thread.run_sync(
                    build_adapter, self.settings, abandon_on_cancel=True
                )
                if limits is not None:
                    check_contract(adapter.contract)
                await adapter.load()
        except (Exception, SystemExit) as exc:  # a script calling sys.exit() fails setup too
            self.health.failed(exc)
            logger.error("setup failed: %s", self.health.reason)
        else:
            self.adapter = adapter
            how = f"{adapter.contract} contract"
            if limits is not None:
                self.batcher = Batcher(self._predict_batch, limits, observe=self._observe_batch)
                how += f", batches of {limits.max_batch_size} within {limits.max_latency_ms:g} ms"
            self.health.succeeded()
            logger.info("model %s ready (%s)", self.name, how)
        finally:
            self.load_seconds = time.perf_counter() - started

    def require_ready(self) -> Adapter:
        if self.adapter is None or self.health.state is not State.READY:
            state = self.health.state
            detail = "is still loading" if state is State.STARTING else "failed to load"
            raise ModelNotReady(f"model {self.name!r} {detail} ({state})")
        return self.adapter

    async def predict(self, call: Call, *, stream: bool = False) -> Any:
        """The script's answer; its exceptions become a 500 with their message only.

        A generator the script returns is handed back as it is when ``stream`` (the
        endpoint streams it), else gathered into a list here. With batching the call
        waits for its batch and gets its own item of the batch's answer."""
        adapter = self.require_ready()
        if self.batcher is not None:  # it answers this call's own item, or a CellError
            return await self.batcher.submit(call)
        try:
            result = await adapter.predict(call)
            if is_stream(result) and not stream:
                result = await collect(result)
            return result
        except Exception as exc:
            logger.exception("prediction failed")
            raise PredictionFailed(describe(exc)) from exc

    async def _predict_batch(self, calls: list[Call]) -> Any:
        """One call of the script for a batch: its inputs as a list, in order (the
        batcher only batches calls with the same parameters)."""
        adapter = self.require_ready()
        return await adapter.predict(Call(inputs=[c.inputs for c in calls], kwargs=calls[0].kwargs))

    def _observe_batch(self, size: int) -> None:
        for observe in self.batch_observers:
            observe(size)
