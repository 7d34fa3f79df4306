"""mapictl profiles and services against a real daemon."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from mapid.cli.app import app

from conftest import DaemonProc

runner = CliRunner()


def cli(daemon: DaemonProc, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["--runtime-dir", str(daemon.runtime), *args])
    return result.exit_code, result.output


def test_profiles_list(daemon: DaemonProc) -> None:
    code, out = cli(daemon, "--json", "profiles", "list")
    assert code == 0
    assert json.loads(out) == {
        "profiles": [{"name": "alpha", "default": True}, {"name": "beta", "default": False}]
    }
    code, out = cli(daemon, "profiles", "list")
    assert code == 0 and "alpha" in out and "yes" in out


def test_services_available_and_list(daemon: DaemonProc) -> None:
    code, out = cli(daemon, "services", "available")
    assert code == 0 and "vcard" in out and "MAPI_AB_PROVIDER" in out
    code, out = cli(daemon, "--json", "services", "list", "--profile", "alpha")
    assert code == 0
    listed = json.loads(out)
    by_name = {s["name"]: s for s in listed["services"]}
    assert by_name["contacts"]["service"] == "vcard"
    assert "SERVICE_PRIMARY_IDENTITY" in by_name["contacts"]["flags"]
    assert by_name["mail"]["providers"][0]["resource_type"] == "MAPI_STORE_PROVIDER"


def test_services_list_of_an_unknown_profile_exits_3(daemon: DaemonProc) -> None:
    code, out = cli(daemon, "services", "list", "-p", "nope")
    assert code == 3
    assert "no profile 'nope'" in out
