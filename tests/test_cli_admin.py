"""mapictl profiles, services and config against a real daemon."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner, Result

from mapid.cli.admin import config_app, parse_problems, parse_settings
from mapid.cli.app import app

from conftest import DaemonFactory, DaemonProc, standard_profile

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


# --- changing profiles ---------------------------------------------------------------------------


def run(daemon: DaemonProc, *args: str) -> Result:
    return runner.invoke(app, ["--runtime-dir", str(daemon.runtime), *args])


def profile_names(daemon: DaemonProc) -> list[str]:
    result = run(daemon, "--json", "profiles", "list")
    assert result.exit_code == 0, result.output
    return [p["name"] for p in json.loads(result.stdout)["profiles"]]


def test_profiles_create_copy_rename_delete(daemon: DaemonProc) -> None:
    profiles_dir = daemon.config_dir / "profiles"
    result = run(daemon, "profiles", "create", "gamma")
    assert result.exit_code == 0, result.output
    assert result.stdout == "created profile gamma\n"
    assert (profiles_dir / "gamma.toml").exists()
    assert profile_names(daemon) == ["alpha", "beta", "gamma"]

    result = run(daemon, "profiles", "create", "gamma")
    assert result.exit_code == 1 and "MAPI_E_NO_ACCESS" in result.stderr
    result = run(daemon, "profiles", "create", "a/b")
    assert result.exit_code == 1 and "MAPI_E_INVALID_PARAMETER" in result.stderr

    result = run(daemon, "--json", "profiles", "copy", "alpha", "delta")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"ok": True, "profile": "alpha", "new_name": "delta"}
    assert "[services.contacts]" in (profiles_dir / "delta.toml").read_text()

    result = run(daemon, "profiles", "rename", "delta", "epsilon")
    assert result.exit_code == 0, result.output
    assert result.stdout == "renamed profile delta to epsilon\n"
    assert profile_names(daemon) == ["alpha", "beta", "epsilon", "gamma"]

    for name in ("epsilon", "gamma"):
        result = run(daemon, "profiles", "delete", name, "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == {"ok": True, "profile": name}
    assert profile_names(daemon) == ["alpha", "beta"]
    assert not (profiles_dir / "gamma.toml").exists()


def test_profiles_of_unknown_names_exit_3(daemon: DaemonProc) -> None:
    for args in (("delete", "nope"), ("copy", "nope", "x"), ("rename", "nope", "x")):
        result = run(daemon, "profiles", *args)
        assert result.exit_code == 3, (args, result.output)
        assert "MAPI_E_NOT_FOUND" in result.stderr
    result = run(daemon, "--json", "profiles", "delete", "nope")
    assert json.loads(result.stdout)["error"]["code"] == "MAPI_E_NOT_FOUND"


def test_profiles_default(daemon: DaemonProc) -> None:
    result = run(daemon, "profiles", "default")
    assert result.exit_code == 0 and result.stdout == "alpha\n"

    result = run(daemon, "profiles", "default", "beta")
    assert result.exit_code == 0 and result.stdout == "default profile: beta\n"
    result = run(daemon, "--json", "profiles", "default")
    assert json.loads(result.stdout) == {"default": "beta"}
    assert 'default_profile = "beta"' in (daemon.config_dir / "mapid.toml").read_text()

    result = run(daemon, "profiles", "default", "--none", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout) == {"ok": True, "default": None}
    result = run(daemon, "profiles", "default")
    assert result.exit_code == 0 and result.stdout == "no default profile\n"
    assert json.loads(run(daemon, "profiles", "default", "--json").stdout) == {"default": None}

    result = run(daemon, "profiles", "default", "nope")
    assert result.exit_code == 3 and "MAPI_E_NOT_FOUND" in result.stderr
    result = run(daemon, "profiles", "default", "alpha", "--none")
    assert result.exit_code == 2 and "not both" in result.stderr


# --- services: what needs no daemon op beyond services.table --------------------------------------


def test_parse_settings() -> None:
    assert parse_settings(
        [
            "flag=true",
            "port=3",
            'quoted="x y"',
            "plain=hello world",
            "path=/home/ada/Mail",
            "empty=",
            "day=2024-01-01",
            "list=[1, 2]",
            "identity.email=ada@example.org",
            "identity.display_name=Ada Lovelace",
            "tricky=1\nother = 2",
        ]
    ) == {
        "flag": True,
        "port": 3,
        "quoted": "x y",
        "plain": "hello world",
        "path": "/home/ada/Mail",
        "empty": "",
        "day": "2024-01-01",
        "list": [1, 2],
        "identity": {"email": "ada@example.org", "display_name": "Ada Lovelace"},
        "tricky": "1\nother = 2",
    }
    for bad in (["novalue"], ["=3"], ["a..b=1"], ["a=1", "a=2"], ["a=1", "a.b=2"]):
        with pytest.raises(typer.BadParameter):
            parse_settings(bad)


def test_services_usage_errors_and_unknown_service(daemon: DaemonProc) -> None:
    result = run(daemon, "services", "add", "vcard", "-p", "alpha", "--set", "novalue")
    assert result.exit_code == 2 and "KEY=VALUE" in result.stderr
    result = run(daemon, "services", "configure", "contacts", "-p", "alpha")
    assert result.exit_code == 2 and "at least one" in result.stderr
    result = run(daemon, "services", "identity", "-p", "alpha")
    assert result.exit_code == 2
    result = run(daemon, "services", "identity", "contacts", "--none", "-p", "alpha")
    assert result.exit_code == 2
    result = run(daemon, "services", "order", "zz", "-p", "alpha")
    assert result.exit_code == 2 and "not a hex string" in result.stderr
    result = run(daemon, "services", "remove", "nothing-here", "-p", "alpha")
    assert result.exit_code == 3 and "no service 'nothing-here'" in result.stderr
    result = run(daemon, "services", "remove", "contacts", "-p", "nope")
    assert result.exit_code == 3


# --- services: the write ops ---------------------------------------------------------------------


def listed(daemon: DaemonProc, profile: str) -> dict[str, dict[str, Any]]:
    result = run(daemon, "--json", "services", "list", "-p", profile)
    assert result.exit_code == 0, result.output
    return {s["name"]: s for s in json.loads(result.stdout)["services"]}


def test_services_add_configure_copy_remove(daemon: DaemonProc, tmp_path: Path) -> None:
    result = run(
        daemon,
        "services",
        "add",
        "vcard",
        "-p",
        "beta",
        "--name",
        "Work contacts",
        "--set",
        f"path={tmp_path / 'work'}",
        "--set",
        "identity.display_name=Bob",
        "--set",
        "identity.email=bob@example.org",
    )
    assert result.exit_code == 0, result.output
    uid = result.stdout.strip()
    assert len(bytes.fromhex(uid)) == 16
    assert listed(daemon, "beta")["Work contacts"]["service_uid"] == uid
    text = (daemon.config_dir / "profiles" / "beta.toml").read_text()
    assert "[services.vcard]" in text and 'email = "bob@example.org"' in text

    # A refused configuration: the error, then each problem as KEY: MESSAGE.
    result = run(
        daemon, "services", "configure", "Work contacts", "-p", "beta", "--set", "identity.email=x"
    )
    assert result.exit_code == 1, result.output
    assert "MAPI_E_INVALID_PARAMETER" in result.stderr
    assert "\nidentity.display_name: " in result.stderr

    result = run(
        daemon,
        "--json",
        "services",
        "configure",
        uid,
        "-p",
        "beta",
        "--set",
        "identity.display_name=Robert",
        "--set",
        "identity.email=robert@example.org",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"ok": True, "profile": "beta", "service_uid": uid}
    assert (
        'email = "robert@example.org"' in (daemon.config_dir / "profiles" / "beta.toml").read_text()
    )

    result = run(
        daemon, "--json", "services", "copy", "Work contacts", "-p", "beta", "--to", "alpha"
    )
    assert result.exit_code == 0, result.output
    copied = json.loads(result.stdout)
    assert copied["service_uid"] == uid and copied["to_profile"] == "alpha"
    assert listed(daemon, "alpha")["Work contacts"]["service_uid"] == copied["new_service_uid"]

    result = run(daemon, "services", "remove", copied["new_service_uid"], "-p", "alpha")
    assert result.exit_code == 0, result.output
    assert "Work contacts" not in listed(daemon, "alpha")
    # The section key finds a service whose display name differs from it.
    result = run(daemon, "services", "remove", "vcard", "-p", "beta")
    assert result.exit_code == 0, result.output
    assert "Work contacts" not in listed(daemon, "beta")


def test_services_add_refusals(daemon: DaemonProc) -> None:
    result = run(daemon, "services", "add", "no-such-service", "-p", "alpha")
    assert result.exit_code == 3, result.output
    result = run(daemon, "services", "add", "vcard", "-p", "alpha", "--set", "path=3")
    assert result.exit_code == 1, result.output
    assert "\npath: " in result.stderr


def key_column(daemon: DaemonProc, profile: str) -> dict[str, str]:
    """`services list` as a person reads it: Key column -> the rest of the row's first line."""
    result = run(daemon, "services", "list", "-p", profile)
    assert result.exit_code == 0, result.output
    header, _rule, *rows = result.stdout.splitlines()
    assert header.split()[:2] == ["Key", "Name"]
    return {row.split()[0]: row for row in rows if row and not row.startswith(" ")}


def test_services_list_shows_the_key_that_configure_and_remove_take(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    # A hand-written file: sections whose name is their key, and one named by hand with a
    # display name: the daemon sends every key (PR_MAPID_SERVICE_KEY).
    profile = standard_profile(tmp_path / "a") + (
        '\n[services.office]\nservice = "vcard"\n'
        f'path = "{tmp_path / "office"}"\ndisplay_name = "Office people"\n'
    )
    daemon = make_daemon(profiles={"alpha": profile})
    result = run(
        daemon,
        "services",
        "add",
        "vcard",
        "-p",
        "alpha",
        "--name",
        "Work contacts",
        "--set",
        f"path={tmp_path / 'work'}",
    )
    assert result.exit_code == 0, result.output
    uid = result.stdout.strip()
    assert "added vcard to profile alpha as key vcard" in result.stderr
    again = run(
        daemon, "--json", "services", "add", "vcard", "-p", "alpha", "--set", f"path={tmp_path}"
    )
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["key"] == "vcard-2"

    listing = run(daemon, "--json", "services", "list", "-p", "alpha")
    found = {s["name"]: s for s in json.loads(listing.stdout)["services"]}
    assert {name: s["key"] for name, s in found.items()} == {
        "contacts": "contacts",
        "mail": "mail",
        "Office people": "office",
        "Work contacts": "vcard",
        "vcard-2": "vcard-2",
    }
    rows = key_column(daemon, "alpha")
    assert set(rows) == {"contacts", "mail", "office", "vcard", "vcard-2"}
    assert rows["vcard"].split()[1] == "Work" and " vcard " in rows["vcard"]

    # Every value of the Key column is what configure and remove take.
    for key in rows:
        result = run(daemon, "services", "configure", key, "-p", "alpha", "--set", "display_name=X")
        assert result.exit_code == 0, (key, result.output)
    result = run(daemon, "services", "remove", "vcard", "-p", "alpha")
    assert result.exit_code == 0, result.output
    assert uid not in {s["service_uid"] for s in listed_all(daemon, "alpha")}


def listed_all(daemon: DaemonProc, profile: str) -> list[dict[str, Any]]:
    result = run(daemon, "--json", "services", "list", "-p", profile)
    assert result.exit_code == 0, result.output
    services: list[dict[str, Any]] = json.loads(result.stdout)["services"]
    return services


def test_a_key_wins_over_a_display_name(make_daemon: DaemonFactory, tmp_path: Path) -> None:
    """Keys are unique in a profile, display names need not be: `work` names the section
    [services.work], even when another section is displayed as "work"."""
    profile = (
        f'[services.work]\nservice = "vcard"\npath = "{tmp_path / "w"}"\n'
        f'[services.other]\nservice = "vcard"\npath = "{tmp_path / "o"}"\n'
        'display_name = "work"\n'
    )
    daemon = make_daemon(profiles={"alpha": profile})
    result = run(daemon, "services", "remove", "work", "-p", "alpha")
    assert result.exit_code == 0, result.output
    assert [s["name"] for s in listed_all(daemon, "alpha")] == ["work"]
    assert "[services.other]" in (daemon.config_dir / "profiles" / "alpha.toml").read_text()


def test_services_identity(daemon: DaemonProc) -> None:
    def identity_of(profile: str) -> list[str]:
        return [
            name
            for name, s in listed(daemon, profile).items()
            if "SERVICE_PRIMARY_IDENTITY" in s["flags"]
        ]

    assert identity_of("alpha") == ["contacts"]
    result = run(daemon, "--json", "services", "identity", "--none", "-p", "alpha")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"ok": True, "profile": "alpha", "service_uid": None}
    assert identity_of("alpha") == []
    result = run(daemon, "services", "identity", "contacts", "-p", "alpha")
    assert result.exit_code == 0, result.output
    assert identity_of("alpha") == ["contacts"]
    result = run(daemon, "services", "identity", "mail", "-p", "alpha")
    assert result.exit_code == 1 and "MAPI_E_NO_ACCESS" in result.stderr


def test_services_order(make_daemon: DaemonFactory, tmp_path: Path) -> None:
    profile = standard_profile(tmp_path / "a") + (
        '\n[services.one]\nservice = "providers_for_tests:Transport"\n'
        '\n[services.two]\nservice = "providers_for_tests:Transport"\n'
    )
    proc = make_daemon(profiles={"alpha": profile})

    def transports() -> list[tuple[int, str, str]]:
        return sorted(
            (p["ordinal"], name, p["provider_uid"])
            for name, s in listed(proc, "alpha").items()
            for p in s["providers"]
            if p["resource_type"] == "MAPI_TRANSPORT_PROVIDER"
        )

    before = transports()
    assert [name for _o, name, _u in before] == ["one", "two"]
    uids = [uid for _o, _n, uid in before]
    result = run(proc, "services", "order", uids[0], "-p", "alpha")
    assert result.exit_code == 1 and "MAPI_E_BUSY" in result.stderr
    result = run(proc, "services", "order", uids[0], "01" * 16, "-p", "alpha")
    assert result.exit_code == 3 and "MAPI_E_NOT_FOUND" in result.stderr
    result = run(proc, "--json", "services", "order", *uids[::-1], "-p", "alpha")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "ok": True,
        "profile": "alpha",
        "provider_uids": uids[::-1],
    }
    assert [name for _o, name, _u in transports()] == ["two", "one"]


# --- config validate -----------------------------------------------------------------------------


def broken_config(root: Path) -> Path:
    (root / "profiles").mkdir(parents=True)
    (root / "mapid.toml").write_text('log_level = "info"\nthis is = = broken\n')
    (root / "profiles" / "bad.toml").write_text('autologon = false\n[services.x]\npath = "/tmp"\n')
    return root


def test_config_validate_a_good_directory(daemon: DaemonProc) -> None:
    result = runner.invoke(config_app, ["validate", str(daemon.config_dir)])
    assert result.exit_code == 0, result.output
    assert "2 profile(s) loaded, 0 problem(s)" in result.stdout
    result = runner.invoke(config_app, ["validate", "--json", str(daemon.config_dir)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["problems"] == []
    assert report["summary"].endswith("2 profile(s) loaded, 0 problem(s)")


def test_config_validate_json_of_a_broken_directory(tmp_path: Path) -> None:
    root = broken_config(tmp_path / "conf")
    result = runner.invoke(config_app, ["validate", "--json", str(root)])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert report["problems"] == [
        {
            "file": str(root / "mapid.toml"),
            "line": 2,
            "message": report["problems"][0]["message"],
        },
        {
            "file": str(root / "profiles" / "bad.toml"),
            "line": 2,
            "message": '[services.x] needs service = "<name>"',
        },
    ]
    assert report["problems"][0]["message"].startswith("not valid TOML")
    result = runner.invoke(config_app, ["validate", str(tmp_path / "missing")])
    assert result.exit_code == 2


def test_parse_problems() -> None:
    assert parse_problems("/a/b.toml:3: bad\n  more of it\n/a/c.toml: unreadable\n") == [
        {"file": "/a/b.toml", "line": 3, "message": "bad\n  more of it"},
        {"file": "/a/c.toml", "line": None, "message": "unreadable"},
    ]


def test_config_validate_subprocess(tmp_path: Path) -> None:
    root = broken_config(tmp_path / "conf")
    done = subprocess.run(
        [sys.executable, "-m", "mapid.cli.app", "config", "validate", str(root)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert f"{root / 'mapid.toml'}:2: not valid TOML" in done.stderr
    assert f"{root / 'profiles' / 'bad.toml'}:2: [services.x] needs service" in done.stderr
    assert "2 problem(s)" in done.stdout
