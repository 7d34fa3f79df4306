"""Where clients look for the daemon: their own runtime directory, else the machine's."""

from __future__ import annotations

from pathlib import Path

import pytest

from mapid import paths


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    user, system = tmp_path / "user", tmp_path / "system"
    user.mkdir()
    system.mkdir()
    monkeypatch.delenv("MAPID_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(user))
    monkeypatch.setattr(paths, "SYSTEM_RUNTIME_DIR", system)
    return user / "mapid", system


def test_no_daemon_anywhere_points_at_the_users_directory(dirs: tuple[Path, Path]) -> None:
    user, _system = dirs
    assert paths.client_runtime_dir() == user


def test_only_the_system_daemon_runs(dirs: tuple[Path, Path]) -> None:
    _user, system = dirs
    (system / paths.CONNECTION_FILE).write_text("{}")
    assert paths.client_runtime_dir() == system


def test_the_users_own_daemon_comes_first(dirs: tuple[Path, Path]) -> None:
    user, system = dirs
    (system / paths.CONNECTION_FILE).write_text("{}")
    user.mkdir()
    (user / paths.CONNECTION_FILE).write_text("{}")
    assert paths.client_runtime_dir() == user


def test_mapid_runtime_dir_always_wins(
    dirs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _user, system = dirs
    (system / paths.CONNECTION_FILE).write_text("{}")
    monkeypatch.setenv("MAPID_RUNTIME_DIR", str(tmp_path / "elsewhere"))
    assert paths.client_runtime_dir() == tmp_path / "elsewhere"
