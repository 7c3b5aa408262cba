"""Settings read from the environment, and the paths they derive."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployserver.config import Settings


def test_a_relative_data_dir_becomes_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings(data_dir=Path("data"))
    assert settings.data_dir == tmp_path / "data"
    assert settings.deployments_dir.is_absolute() and settings.logs_dir.is_absolute()


def test_every_option_reads_its_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOYSERVER_PORT", "9123")
    monkeypatch.setenv("DEPLOYSERVER_RUNTIME", "process")
    monkeypatch.setenv("DEPLOYSERVER_DATABASE_URL", "postgresql+psycopg://u:p@h/db")
    settings = Settings()
    assert settings.port == 9123 and settings.runtime == "process"
    assert settings.resolved_database_url == "postgresql+psycopg://u:p@h/db"
