"""The reconciler's database steps: each one named, one transaction, run in a worker
thread so the event loop never waits on the database. Every change to a deployment tells
``on_change`` its model, so /serve reloads that model's route on its next request."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from datetime import timedelta

import anyio
from sqlalchemy.orm import Session, sessionmaker

from deployserver.control import lifecycle
from deployserver.control.decide import Replica, Wanted
from deployserver.domain import DeploymentStatus, DesiredState, ReplicaState, Tier
from deployserver.runtime.base import CellInfo
from deployserver.store import orm, queries
from deployserver.upload.metadata import DeploymentMetadata

Change = Callable[[Session, orm.Deployment], object]


class Steps:
    """What the reconciler reads from and records in the database."""

    def __init__(self, sessions: sessionmaker[Session], on_change: Callable[[str], None]) -> None:
        self.sessions = sessions
        self.on_change = on_change
        self._activation = threading.Lock()
        """Held by the changes that decide which version serves, one at a time: two
        versions ready at once would each read the model's active one before the other
        wrote (SQLite's reads run outside the write's transaction), and the second would
        take over without stopping the first."""

    # reads ------------------------------------------------------------------------
    async def wanted(self) -> list[Wanted]:
        """A snapshot of every deployment the reconciler has to look at."""
        return await anyio.to_thread.run_sync(self._wanted)

    def _wanted(self) -> list[Wanted]:
        with self.sessions() as session:
            return [_snapshot(d) for d in queries.deployments_to_reconcile(session)]

    async def known(self, deploy_ids: set[str]) -> set[str]:
        """Which of ``deploy_ids`` have a record (cells of the others are orphans)."""
        return await anyio.to_thread.run_sync(self._known, deploy_ids)

    def _known(self, deploy_ids: set[str]) -> set[str]:
        with self.sessions() as session:
            return queries.existing_deploy_ids(session, deploy_ids)

    # changes ----------------------------------------------------------------------
    async def transition(
        self,
        deploy_id: str,
        status: DeploymentStatus,
        message: str,
        *,
        reason: str | None = None,
        kind: str | None = None,
    ) -> None:
        def change(session: Session, d: orm.Deployment) -> None:
            lifecycle.set_status(session, d, status, message, reason=reason, kind=kind)

        await self._change(deploy_id, change)

    async def fail(self, deploy_id: str, reason: str) -> None:
        """Failed, with ``reason``; it no longer takes over its model, and has no cell."""

        def change(session: Session, d: orm.Deployment) -> None:
            d.activation = None
            lifecycle.set_status(session, d, DeploymentStatus.FAILED, reason, reason=reason)
            for cell in d.cells:
                _vacate(cell)

        await self._change(deploy_id, change)

    async def ready(self, deploy_id: str, took: float, replicas: int) -> None:
        """Ready after ``took`` seconds with ``replicas`` ready; it takes over its model if
        it should."""

        def change(session: Session, d: orm.Deployment) -> None:
            lifecycle.set_status(session, d, DeploymentStatus.READY, f"ready after {took:.1f} s")
            d.desired_replicas, d.paused, d.tier = replicas, False, None
            _settle_activation(session, d)
            replicas_reason(d)

        await self._change(deploy_id, change, activation=True)

    async def settle_activation(self, deploy_id: str) -> None:
        """A ready deployment asked to serve (a rollback to it) takes over now."""
        await self._change(deploy_id, _settle_activation, activation=True)

    async def clear_restart(self, deploy_id: str) -> None:
        """A requested restart is under way: the request and the crash counts are done."""

        def change(_session: Session, d: orm.Deployment) -> None:
            d.restart_requested = False
            for cell in d.cells:
                cell.crashes = 0

        await self._change(deploy_id, change)

    async def stopped(self, deploy_id: str) -> None:
        """Its cells are gone, as asked."""

        def change(session: Session, d: orm.Deployment) -> None:
            for cell in d.cells:
                _vacate(cell)
            if d.status in lifecycle.ACTIVE_STATES:
                lifecycle.set_status(session, d, DeploymentStatus.STOPPED, "stopped")

        await self._change(deploy_id, change)

    async def forget(self, deploy_id: str, model: str) -> None:
        """Delete the deployment's record (its events and files' rows go with it)."""

        def forget() -> None:
            with self.sessions.begin() as session:
                d = queries.find_deployment(session, deploy_id)
                if d is not None:
                    session.delete(d)
            self.on_change(model)

        await anyio.to_thread.run_sync(forget)

    # replicas ---------------------------------------------------------------------
    async def claim_slot(
        self, deploy_id: str, info: CellInfo, node: str, *, slot: int | None, restart: bool
    ) -> int:
        """Record ``info`` as a starting replica in ``slot`` (None: the lowest vacant one,
        else a new one); a restart counts in its slot. Returns the slot."""

        def change(_session: Session, d: orm.Deployment) -> int:
            vacant = [c for c in d.cells if c.runtime_id is None]
            if slot is not None:
                vacant = [c for c in d.cells if c.slot == slot]
            if vacant:
                cell = vacant[0]
            else:
                taken = [c.slot for c in d.cells]
                number = max(taken, default=-1) + 1
                cell = orm.Cell(runtime=info.runtime, slot=number, restarts=0, crashes=0)
                d.cells.append(cell)
            cell.runtime, cell.runtime_id, cell.url = info.runtime, info.id, info.url
            cell.grpc_address, cell.node = info.grpc_address, info.node or node
            cell.state = ReplicaState.STARTING
            cell.started_at = orm.utcnow()
            if restart:
                cell.restarts += 1
            return cell.slot

        taken = await self._change(deploy_id, change)
        return taken if isinstance(taken, int) else 0

    async def replica_ready(self, deploy_id: str, cell_id: str) -> None:
        """The replica passed its health gate: it gets requests from now on."""
        await self.replica_state(deploy_id, [cell_id], ReplicaState.READY)

    async def replica_state(
        self, deploy_id: str, cell_ids: list[str], state: ReplicaState, event: str = ""
    ) -> None:
        """Replicas ready, paused or draining (the route table hears of it at once)."""

        def change(session: Session, d: orm.Deployment) -> None:
            for cell in d.cells:
                if cell.runtime_id in cell_ids:
                    cell.state = state
                    if state is ReplicaState.READY:
                        cell.last_health_at = orm.utcnow()
            if event:
                queries.add_event(session, d, state.value, event)
            replicas_reason(d)

        await self._change(deploy_id, change)

    async def woke(self, deploy_id: str, cell_ids: list[str], event: str) -> None:
        """Paused replicas thawed: ready again, and the deployment no longer paused."""

        def change(session: Session, d: orm.Deployment) -> None:
            for cell in d.cells:
                if cell.runtime_id in cell_ids:
                    cell.state = ReplicaState.READY
            d.paused, d.tier = False, Tier.SERVING
            queries.add_event(session, d, "woken", event)
            replicas_reason(d)

        await self._change(deploy_id, change)

    async def vacate(self, deploy_id: str, cell_ids: list[str], event: str = "") -> None:
        """These replicas' cells are gone."""

        def change(session: Session, d: orm.Deployment) -> None:
            for cell in d.cells:
                if cell.runtime_id in cell_ids:
                    _vacate(cell)
            if event:
                queries.add_event(session, d, "replicas", event)
            replicas_reason(d)

        await self._change(deploy_id, change)

    async def crashed(self, deploy_id: str, slot: int, crashes: int, message: str) -> bool:
        """A ready replica died: counted in its slot. With no other ready replica the
        deployment is starting again (returns False), else it stays ready."""

        def change(session: Session, d: orm.Deployment) -> bool:
            others = [c for c in d.cells if c.slot != slot and c.runtime_id]
            serving = any(c.state is ReplicaState.READY for c in others)
            for cell in d.cells:
                if cell.slot == slot:
                    cell.crashes = crashes
                    _vacate(cell)
            if serving:
                queries.add_event(session, d, "crashed", message)
                replicas_reason(d)
            else:
                status = DeploymentStatus.STARTING
                lifecycle.set_status(session, d, status, message, reason=message, kind="crashed")
            return serving

        return bool(await self._change(deploy_id, change))

    async def scaled(
        self, deploy_id: str, desired: int, paused: bool, tier: str, message: str
    ) -> None:
        """The autoscaler's target; ``message`` (when any) is recorded as an event."""

        def change(session: Session, d: orm.Deployment) -> None:
            if d.status is not DeploymentStatus.READY:
                return
            d.desired_replicas, d.paused, d.tier = desired, paused, tier
            if message:
                queries.add_event(session, d, "scaled", message)
            replicas_reason(d)

        await self._change(deploy_id, change)

    async def touch(self, cell_ids: list[str], forgive_after: float) -> None:
        """The cells ``cell_ids`` answered their health ping; a cell healthy for
        ``forgive_after`` seconds since it started has its crash count forgiven, so only
        crashes close together make a crash loop."""

        def touch() -> None:
            now = orm.utcnow()
            stable_since = now - timedelta(seconds=forgive_after)
            with self.sessions.begin() as session:
                queries.touch_cells(session, cell_ids, now=now, stable_since=stable_since)

        await anyio.to_thread.run_sync(touch)

    async def _change(self, deploy_id: str, change: Change, *, activation: bool = False) -> object:
        return await anyio.to_thread.run_sync(self._change_now, deploy_id, change, activation)

    def _change_now(self, deploy_id: str, change: Change, activation: bool = False) -> object:
        model, result = None, None
        with (
            self._activation if activation else contextlib.nullcontext(),
            self.sessions.begin() as session,
        ):
            d = queries.find_deployment(session, deploy_id)
            if d is not None:
                model = d.model.name
                result = change(session, d)
        if model is not None:
            self.on_change(model)
        return result


def _snapshot(d: orm.Deployment) -> Wanted:
    first = d.cell
    return Wanted(
        deploy_id=d.deploy_id,
        model=d.model.name,
        version=d.version,
        status=d.status,
        desired_state=d.desired_state,
        restart_requested=d.restart_requested,
        cell_id=first.runtime_id if first else None,
        crashes=first.crashes if first else 0,
        entrypoint=d.entrypoint,
        meta=DeploymentMetadata.of(d.meta),
        activation=d.activation,
        replicas=tuple(Replica(c.slot, c.runtime_id, c.state, c.crashes) for c in d.cells),
        desired_replicas=d.desired_replicas,
        paused=d.paused,
        tier=d.tier,
    )


def _vacate(cell: orm.Cell) -> None:
    """The slot's cell is gone; its restarts and crash count stay with the slot."""
    cell.runtime_id = cell.url = cell.grpc_address = None
    cell.state = ReplicaState.STARTING


def replicas_reason(d: orm.Deployment) -> None:
    """A ready deployment's reason says when fewer replicas are ready than desired."""
    if d.status is not DeploymentStatus.READY:
        return
    ready = sum(1 for c in d.cells if c.runtime_id and c.state is ReplicaState.READY)
    wanted = 0 if d.paused else d.desired_replicas
    d.status_reason = f"{ready} of {wanted} replicas ready" if ready < wanted else None


def _settle_activation(session: Session, d: orm.Deployment) -> None:
    """A ready deployment asked to serve takes over now, or learns a newer one serves."""
    if d.desired_state is DesiredState.RUNNING and lifecycle.should_activate(session, d):
        lifecycle.activate(session, d)
    elif d.activation is not None:
        d.activation = None
        if d.model.active_deploy_id != d.deploy_id:
            d.desired_state = DesiredState.STOPPED
            queries.add_event(session, d, "superseded", "a newer version serves; stopping")
