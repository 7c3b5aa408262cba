"""Which version serves when two become ready at once: the newer, and the older one stops.
Both decisions read the model's active version; run side by side, the second must see
what the first wrote (the reconciler readies deployments in worker threads of their own)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from deployserver.control import lifecycle
from deployserver.control.steps import Steps
from deployserver.domain import Activation, DeploymentStatus, DesiredState
from deployserver.store import db, orm


@pytest.fixture
def sessions(database_url: str, tmp_path: Path) -> sessionmaker[Session]:
    (tmp_path / "data").mkdir(exist_ok=True)
    db.upgrade(database_url)
    maker = db.make_sessionmaker(db.make_engine(database_url))
    with maker.begin() as session:
        model = orm.Model(name="m", last_version=3)
        session.add(model)
        session.flush()
        for version in (1, 2, 3):
            serving = version == 1
            session.add(
                orm.Deployment(
                    deploy_id=f"d{version}" + "a" * 11,
                    model_id=model.id,
                    version=version,
                    meta={"model": "m"},
                    entrypoint="score.py:Model",
                    contract="model",
                    status=DeploymentStatus.READY if serving else DeploymentStatus.STARTING,
                    desired_state=DesiredState.RUNNING,
                    activation=None if serving else Activation.NEWER,
                )
            )
        model.active_deploy_id = "d1" + "a" * 11
    return maker


async def test_two_versions_ready_at_once_leave_the_newer_serving_and_stop_the_older(
    sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    decide = lifecycle.should_activate

    def slowly(session: Session, d: orm.Deployment) -> Any:
        answer = decide(session, d)
        time.sleep(0.2)  # what a busy machine does between the read and the write
        return answer

    monkeypatch.setattr(lifecycle, "should_activate", slowly)
    steps = Steps(sessions, lambda _model: None)
    await asyncio.gather(steps.ready("d2" + "a" * 11, 1.0, 1), steps.ready("d3" + "a" * 11, 1.0, 1))
    with sessions() as session:
        model = session.query(orm.Model).one()
        by_version = {d.version: d for d in session.query(orm.Deployment)}
        assert model.active_deploy_id == by_version[3].deploy_id
        # nothing older stays meant to run beside it
        assert by_version[1].desired_state is DesiredState.STOPPED
        assert by_version[2].desired_state is DesiredState.STOPPED
        assert by_version[2].activation is None
