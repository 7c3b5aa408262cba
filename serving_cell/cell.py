"""One loaded model: loads it in the background and guards every prediction."""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio.to_thread

from serving_cell.contracts import Adapter, Call
from serving_cell.errors import ModelNotReady, PredictionFailed
from serving_cell.loader import build_adapter
from serving_cell.settings import CellSettings
from serving_cell.state import Health, State

logger = logging.getLogger("serving_cell")


class Cell:
    """The model behind every endpoint; the protocols only translate HTTP to ``Call``."""

    def __init__(self, settings: CellSettings) -> None:
        self.settings = settings
        self.health = Health()
        self.adapter: Adapter | None = None
        self.load_seconds: float | None = None

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
                # Importing the script runs its top level (import torch, ...): off the loop.
                adapter = await anyio.to_thread.run_sync(
                    build_adapter, self.settings, abandon_on_cancel=True
                )
                await adapter.load()
        except (Exception, SystemExit) as exc:  # a script calling sys.exit() fails setup too
            self.health.failed(exc)
            logger.error("setup failed: %s", self.health.reason)
        else:
            self.adapter = adapter
            self.health.succeeded()
            logger.info("model %s ready (%s contract)", self.name, adapter.contract)
        finally:
            self.load_seconds = time.perf_counter() - started

    def require_ready(self) -> Adapter:
        if self.adapter is None or self.health.state is not State.READY:
            state = self.health.state
            detail = "is still loading" if state is State.STARTING else "failed to load"
            raise ModelNotReady(f"model {self.name!r} {detail} ({state})")
        return self.adapter

    async def predict(self, call: Call) -> Any:
        """The script's answer; its exceptions become a 500 with their message only."""
        adapter = self.require_ready()
        try:
            return await adapter.predict(call)
        except Exception as exc:
            logger.exception("prediction failed")
            message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise PredictionFailed(message) from exc
