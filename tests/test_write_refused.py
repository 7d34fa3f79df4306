"""A configuration the daemon may not write is the caller's MAPI_E_NO_ACCESS, not a crash.

Under the system unit (ProtectSystem=strict) /etc/mapid is read-only to the daemon. Root
ignores file modes, so the test makes the profiles folder immutable (chattr +i) instead.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mapid.errors import ErrorCode, MapiError

from conftest import DaemonFactory


@pytest.fixture
def immutable(tmp_path: Path) -> Iterator[list[Path]]:
    frozen: list[Path] = []
    yield frozen
    for path in frozen:
        subprocess.run(["chattr", "-i", str(path)], check=False)


def _freeze(path: Path, frozen: list[Path]) -> None:
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed")
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"chattr +i does not work here: {done.stderr.strip()}")
    frozen.append(path)


def test_a_profile_that_cannot_be_written_is_no_access(
    make_daemon: DaemonFactory, immutable: list[Path]
) -> None:
    proc = make_daemon()
    _freeze(proc.config_dir / "profiles", immutable)
    client = proc.client()
    with pytest.raises(MapiError) as caught:
        client.profiles_create("gamma")
    assert caught.value.code == ErrorCode.MAPI_E_NO_ACCESS
    assert "cannot write" in caught.value.message
    assert client.daemon_ping() == {}  # and it keeps serving
