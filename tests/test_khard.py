"""mapid's address book beside khard, the vCard tool people run on the same folder (issue 20).

Real khard (Debian's `khard`, which .ci/run installs) on the folder of a running daemon's
`vcard` service: a card khard adds resolves in mapid, and the cards `mapictl contacts`
adds, edits and removes are what khard lists, with the UID khard sees never changing.
Without khard the tests skip, except under CI, where they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mapid.cli.app import app
from mapid.client import Client

from conftest import DaemonFactory, DaemonProc, standard_profile, wait_until

runner = CliRunner()

KHARD = shutil.which("khard")


@pytest.fixture(autouse=True)
def _need_khard() -> None:
    if KHARD is None:
        reason = "no `khard` binary (apt-get install --no-install-recommends khard)"
        if os.environ.get("CI"):
            pytest.fail(f"khard tests cannot run under CI: {reason}", pytrace=False)
        pytest.skip(f"khard tests skipped: {reason}")


class Khard:
    """khard with its own configuration, reading one vCard folder."""

    def __init__(self, folder: Path, home: Path) -> None:
        self.folder = folder
        self.config = home / "khard.conf"
        self.config.write_text(
            f"[addressbooks]\n[[mapid]]\npath = {folder}\n\n"
            "[general]\ndefault_action = list\neditor = /bin/false\nmerge_editor = /bin/false\n"
            "\n[vcard]\npreferred_version = 4.0\n"
        )
        self.env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home)}

    def run(self, *args: str) -> str:
        assert KHARD is not None
        done = subprocess.run(
            [KHARD, "-c", str(self.config), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=30,
        )
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    def emails(self) -> dict[str, str]:
        """address -> name, from `khard email --parsable`."""
        rows = [line.split("\t") for line in self.run("email", "-p").splitlines() if line]
        return {row[0]: row[1] for row in rows if len(row) >= 2}

    def uids(self) -> dict[str, str]:
        """name -> UID, from `khard list --parsable`."""
        rows = [line.split("\t") for line in self.run("list", "-p").splitlines() if line]
        return {row[1]: row[0] for row in rows if len(row) >= 2}


def mapictl(daemon: DaemonProc, *args: str) -> Any:
    result = runner.invoke(app, ["--runtime-dir", str(daemon.runtime), "--json", *args])
    assert result.exit_code == 0, (args, result.output)
    return json.loads(result.stdout)


def resolves(client: Client, name: str) -> dict[str, Any] | None:
    token = bytes(client.session_logon("alpha")["token"])
    ab = int(client.session_open_address_book(token)["handle"])
    try:
        [row] = client.ab_resolve_names(token, ab, [name])["recipients"]
    except Exception:
        return None
    finally:
        client.session_logoff(token)
    return dict(row)


def test_khard_and_mapictl_contacts_work_on_one_folder(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    daemon = make_daemon(profiles={"alpha": standard_profile(tmp_path / "alpha")})
    folder = tmp_path / "alpha" / "contacts"
    khard = Khard(folder, tmp_path)
    client = daemon.client()

    # khard adds a card: mapid resolves it
    template = tmp_path / "new.yaml"
    template.write_text(
        "First name: Barbara\nLast name: Liskov\nEmail:\n    work: liskov@example.org\n"
    )
    khard.run("new", "-a", "mapid", "-i", str(template))
    row = wait_until(lambda: resolves(client, "Liskov"), "mapid to see khard's new card")
    assert row["PR_EMAIL_ADDRESS"] == "liskov@example.org"

    # mapictl adds a card: khard lists it, under the UID that names its file
    added = mapictl(daemon, "contacts", "add", "--name", "Alan Kay", "--email", "kay@example.org")
    assert added["contact"]["email"] == "kay@example.org"
    assert khard.emails()["kay@example.org"] == "Alan Kay"
    uid = khard.uids()["Alan Kay"]
    assert (folder / f"{uid}.vcf").is_file()

    # mapictl edits it: khard sees the new address, the UID stays
    mapictl(daemon, "contacts", "edit", "kay@example.org", "--email", "alan@example.org")
    emails = khard.emails()
    assert emails.get("alan@example.org") == "Alan Kay" and "kay@example.org" not in emails
    assert khard.uids()["Alan Kay"] == uid

    # mapictl removes it: khard no longer lists it; khard's own card is untouched
    mapictl(daemon, "contacts", "rm", "alan@example.org")
    assert "Alan Kay" not in khard.uids()
    assert khard.emails()["liskov@example.org"] == "Barbara Liskov"
