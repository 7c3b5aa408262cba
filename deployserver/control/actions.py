"""What the reconciler does to a deployment's replicas: rise, recover, scale up and down,
pause, resume, stop. Each runs as the deployment's one task; replicas of one deployment
start, pass their health gates and drain side by side."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx

from deployserver.config import Settings
from deployserver.control.awake import Awake
from deployserver.control.cells import Cells
from deployserver.control.cellspec import spec_for
from deployserver.control.decide import Replica, Wanted, dead_replicas, strays
from deployserver.control.health_gate import HealthPolicy, Verdict, await_ready
from deployserver.control.steps import Steps
from deployserver.domain import ACTIVE_STATES, DeploymentStatus, ReplicaState
from deployserver.runtime.base import CellInfo, CellSpec


class Actions:
    def __init__(
        self,
        *,
        settings: Settings,
        steps: Steps,
        cells: Cells,
        awake: Awake,
        http: httpx.AsyncClient,
        policy: HealthPolicy,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self.settings = settings
        self.steps = steps
        self.cells = cells
        self.awake = awake
        self.http = http
        self.policy = policy
        # a replica woken from zero is pinged often: a request waits on it
        self.wake_policy = HealthPolicy(
            first_delay=0.01,
            max_delay=0.02,
            deadline=policy.deadline,
            ping_timeout=policy.ping_timeout,
        )
        self.clock = clock
        self.sleep = sleep

    # rise -------------------------------------------------------------------------
    async def rise(self, w: Wanted, found: list[CellInfo], *, restart: bool = False) -> None:
        """Bring ``w.rise_count`` replicas to ready (running ones adopted) and then the
        deployment: all of them pass their gate before it is ready and may take over."""
        wanted = w.rise_count
        recorded = {r.cell_id: r for r in w.live}
        # one the server cannot reach (say, left by an older version on another network)
        # is replaced rather than adopted; recorded cells are adopted first
        running = sorted(
            (c for c in found if c.running and c.url), key=lambda c: c.id not in recorded
        )
        adopt = running[:wanted]
        kept = {c.id for c in adopt}
        await self.cells.remove(w.deploy_id, [c for c in found if c.id not in kept])
        gone = [r.cell_id for r in w.live if r.cell_id and r.cell_id not in kept]
        if gone:
            await self.steps.vacate(w.deploy_id, gone)
        started = self.clock()
        if adopt:
            message = f"adopted running cell {', '.join(c.id[:12] for c in adopt)}"
            await self.steps.transition(w.deploy_id, DeploymentStatus.STARTING, message)
        node = await self.cells.node()
        for info in adopt:
            if info.paused:
                await self.cells.resume(info.id)
            slot = recorded[info.id].slot if info.id in recorded else None
            await self.steps.claim_slot(w.deploy_id, info, node, slot=slot, restart=False)
        infos = list(adopt)
        if len(adopt) < wanted:
            spec = await self._prepare(w, wanted - len(adopt))
            if spec is None:
                await self.cells.remove(w.deploy_id, adopt)
                return
            new = await self._start_many(w, spec, wanted - len(adopt))
            if new is None:
                await self.cells.remove(w.deploy_id, adopt)
                return
            for info in new:
                await self.steps.claim_slot(w.deploy_id, info, node, slot=None, restart=restart)
            infos += new
        verdicts = await asyncio.gather(*(self._gate(info, self.policy) for info in infos))
        failed = [v for v in verdicts if not v.ready]
        if failed:
            await self.cells.remove(w.deploy_id, infos)
            await self.steps.fail(w.deploy_id, failed[0].reason)
            return
        for info in infos:
            await self.steps.replica_ready(w.deploy_id, info.id)
        await self.steps.ready(w.deploy_id, self.clock() - started, len(infos))

    async def _prepare(self, w: Wanted, count: int) -> CellSpec | None:
        """The cell spec, its environment built if it needs one; None (and the deployment
        failed, with the reason) when the build fails."""
        spec = spec_for(self.settings, w)
        if await self.cells.needs_build(spec):
            message = "building the environment image"
            await self.steps.transition(w.deploy_id, DeploymentStatus.BUILDING, message)
            try:
                await self.cells.prepare(spec)
            except Exception as exc:
                await self.steps.fail(w.deploy_id, f"environment build failed: {exc}")
                return None
        what = f"a {self.cells.kind} cell" if count == 1 else f"{count} {self.cells.kind} cells"
        await self.steps.transition(w.deploy_id, DeploymentStatus.STARTING, f"starting {what}")
        return spec

    async def _start_many(self, w: Wanted, spec: CellSpec, count: int) -> list[CellInfo] | None:
        results = await asyncio.gather(
            *(self.cells.start(spec) for _ in range(count)), return_exceptions=True
        )
        started = [r for r in results if isinstance(r, CellInfo)]
        errors = [r for r in results if not isinstance(r, CellInfo)]
        if errors:
            await self.cells.remove(w.deploy_id, started)
            await self.steps.fail(w.deploy_id, f"the cell could not start: {errors[0]}")
            return None
        return started

    async def _gate(self, info: CellInfo, policy: HealthPolicy) -> Verdict:
        if info.url is None:
            return Verdict(False, "the cell has no address the server can reach")
        return await await_ready(
            self.http,
            info.url,
            lambda: self.cells.inspect(info.id),
            policy,
            clock=self.clock,
            sleep=self.sleep,
            exited_reason=lambda seen: self.cells.exit_reason(info.id, seen),
        )

    # replicas of a ready deployment -----------------------------------------------
    async def scale_up(self, w: Wanted, found: list[CellInfo]) -> None:
        """Start the replicas missing, side by side; each serves once its gate passes."""
        need = w.desired_replicas - len(w.serving)
        policy = self.wake_policy if not w.serving else self.policy
        spec = spec_for(self.settings, w)
        if await self.cells.needs_build(spec):  # the environment image was removed since
            await self.cells.prepare(spec)
        vacant = [r for r in w.replicas if r.cell_id is None]
        slots: list[Replica | None] = [*vacant[:need], *[None] * (need - len(vacant))]
        await asyncio.gather(*(self._add(w, spec, slot, policy) for slot in slots))

    async def _add(
        self, w: Wanted, spec: CellSpec, slot: Replica | None, policy: HealthPolicy
    ) -> None:
        try:
            info = await self.cells.start(spec)
        except Exception as exc:
            await self.steps.vacate(w.deploy_id, [], f"a new replica could not start: {exc}")
            return
        node = await self.cells.node()
        where = slot.slot if slot else None
        number = await self.steps.claim_slot(w.deploy_id, info, node, slot=where, restart=False)
        verdict = await self._gate(info, policy)
        if verdict.ready:
            await self.steps.replica_ready(w.deploy_id, info.id)
            return
        await self.cells.remove(w.deploy_id, [info])
        crashes = (slot.crashes if slot else 0) + 1
        if crashes > self.settings.crash_loop_budget:
            await self.steps.fail(w.deploy_id, f"replicas keep failing: {verdict.reason}")
            return
        message = f"replica {number} did not become ready: {verdict.reason}"
        await self.steps.crashed(w.deploy_id, number, crashes, message)

    async def scale_down(self, w: Wanted, found: list[CellInfo]) -> None:
        """Take the extra replicas out of the route table, let them finish their requests,
        then stop them (paused ones first, then the newest slots)."""
        extra = len(w.serving) - w.desired_replicas
        order = sorted(w.serving, key=lambda r: (r.state is not ReplicaState.PAUSED, -r.slot))
        leaving = order[: max(extra, 0)] + [r for r in w.live if r not in w.serving]
        ids = [r.cell_id for r in leaving if r.cell_id]
        await self.steps.replica_state(w.deploy_id, ids, ReplicaState.DRAINING)
        await self.awake.drain(ids, self.settings.drain_timeout)
        await self.cells.remove(w.deploy_id, [c for c in found if c.id in ids])
        to = "zero" if w.desired_replicas == 0 else str(w.desired_replicas)
        await self.steps.vacate(w.deploy_id, ids, f"removed {len(ids)} replica(s), down to {to}")

    async def pause(self, w: Wanted, found: list[CellInfo]) -> None:
        ids = [r.cell_id for r in w.serving if r.cell_id and r.state is not ReplicaState.PAUSED]
        idle = f"no request for {w.meta.scaling.idle_seconds:g} s"
        await self.awake.pause(w.deploy_id, ids, idle)

    async def resume(self, w: Wanted, found: list[CellInfo]) -> None:
        ids = [r.cell_id for r in w.serving if r.cell_id and r.state is ReplicaState.PAUSED]
        await self.awake.resume(w.deploy_id, ids)

    async def clean(self, w: Wanted, found: list[CellInfo]) -> None:
        """A failed deployment's cells, or cells no slot records, go."""
        gone = found if w.status is DeploymentStatus.FAILED else strays(w, found)
        await self.cells.remove(w.deploy_id, gone)

    async def recover(self, w: Wanted, found: list[CellInfo]) -> None:
        """A replica's cell is gone: restart it in its slot with capped backoff, or fail
        the deployment past the slot's crash budget."""
        dead = dead_replicas(w, found)[0]
        seen = next((c for c in found if c.id == dead.cell_id), None)
        if dead.state is ReplicaState.DRAINING:  # on its way out anyway: not restarted
            await self.cells.remove(w.deploy_id, [seen] if seen else [])
            await self.steps.vacate(w.deploy_id, [dead.cell_id] if dead.cell_id else [])
            return
        reason = await self.cells.exit_reason(dead.cell_id, seen)
        crashes = dead.crashes + 1
        successor = await self.cells.successor(dead.cell_id) if dead.cell_id else None
        if successor is not None and crashes <= self.settings.crash_loop_budget:
            if successor.running:  # else the engine is still starting it: a later pass
                await self._adopt_successor(w, dead, successor, crashes, reason)
            return
        if seen is not None:
            await self.cells.remove(w.deploy_id, [seen])
        elif dead.cell_id:
            await self.cells.gone(dead.cell_id)
        budget = self.settings.crash_loop_budget
        if crashes > budget:
            await self.cells.remove(w.deploy_id, found)
            message = f"crash loop: {reason}; restarted {dead.crashes} times, giving up"
            await self.steps.fail(w.deploy_id, message)
            return
        cap = self.settings.restart_backoff_max
        delay = min(self.settings.restart_backoff * 2 ** (crashes - 1), cap)
        message = f"{reason}; restart {crashes} of {budget} in {delay:g} s"
        serving = await self.steps.crashed(w.deploy_id, dead.slot, crashes, message)
        await self.sleep(delay)
        if not serving:  # it was the last one: the deployment rises again
            others = [c for c in found if c.id != dead.cell_id]
            await self.rise(w, others, restart=True)
            return
        spec = spec_for(self.settings, w)
        try:
            info = await self.cells.start(spec)
        except Exception as exc:
            await self.steps.vacate(w.deploy_id, [], f"replica {dead.slot} could not start: {exc}")
            return
        await self._restart_in_slot(w, dead, info, crashes)

    async def _restart_in_slot(
        self, w: Wanted, dead: Replica, info: CellInfo, crashes: int
    ) -> bool:
        """``info`` takes the dead replica's slot, counted as a restart, and serves once its
        gate passes; else it goes and the slot is vacant again. Whether it serves."""
        node = await self.cells.node()
        await self.steps.claim_slot(w.deploy_id, info, node, slot=dead.slot, restart=True)
        verdict = await self._gate(info, self.policy)
        if not verdict.ready:
            await self.cells.remove(w.deploy_id, [info])
            await self.steps.crashed(w.deploy_id, dead.slot, crashes, verdict.reason)
            return False
        await self.steps.replica_ready(w.deploy_id, info.id)
        return True

    async def _adopt_successor(
        self, w: Wanted, dead: Replica, info: CellInfo, crashes: int, reason: str
    ) -> None:
        """The engine replaced the replica itself (Swarm): its new cell takes the slot,
        counted as a restart, and serves once its gate passes."""
        budget = self.settings.crash_loop_budget
        message = f"{reason}; restarted by {self.cells.kind} ({crashes} of {budget})"
        serving = await self.steps.crashed(w.deploy_id, dead.slot, crashes, message)
        started = self.clock()
        # the last one serving again: so is the deployment (not serving: a pass refills it)
        if await self._restart_in_slot(w, dead, info, crashes) and not serving:
            await self.steps.ready(w.deploy_id, self.clock() - started, w.desired_replicas)

    async def restart(self, w: Wanted, found: list[CellInfo]) -> None:
        await self.steps.clear_restart(w.deploy_id)
        # no longer ready once its replicas go: never "ready" without a cell
        message = "restarting: new cells replace the old ones"
        await self.steps.transition(w.deploy_id, DeploymentStatus.STARTING, message)
        await self.cells.remove(w.deploy_id, found)
        await self.steps.vacate(w.deploy_id, [r.cell_id for r in w.live if r.cell_id])
        await self.rise(w, [], restart=True)

    async def stop(self, w: Wanted, found: list[CellInfo]) -> None:
        """Out of the route table, in-flight requests finished, then stopped."""
        if w.status in ACTIVE_STATES and w.status is not DeploymentStatus.STOPPING:
            message = "stopping the cell" if len(found) <= 1 else f"stopping {len(found)} cells"
            await self.steps.transition(w.deploy_id, DeploymentStatus.STOPPING, message)
        ids = [c.id for c in found]
        await self.awake.drain(ids, self.settings.drain_timeout)
        await self.cells.remove(w.deploy_id, found)
        await self.steps.stopped(w.deploy_id)
