"""Files and directories that hurt: each is its own problem, and nothing else suffers.

From an attack run (issue 19): a profile nested 3 000 deep made tomllib raise RecursionError,
which escaped the reload, so `mapictl reload` failed and no other file was applied; a 47 MB
profile was read whole; a Maildir service pointed at `/etc` turned it into a Maildir. Real
daemon, real files, a real reload and logon over the socket.
"""

from __future__ import annotations

from pathlib import Path

from mapid.constants import ResourceType, StatusCode
from mapid.daemon.config.daemon_config import MAX_FILE_BYTES

from conftest import DaemonFactory

DEEP = "a = " + "[" * 3000 + "]" * 3000 + "\n"


def test_a_deeply_nested_profile_keeps_its_last_version_and_the_rest_applies(
    make_daemon: DaemonFactory,
) -> None:
    proc = make_daemon()
    client = proc.client()
    beta = proc.config_dir / "profiles" / "beta.toml"
    beta.write_text(DEEP)
    (proc.config_dir / "profiles" / "gamma.toml").write_text("autologon = false\n")
    report = client.daemon_reload()
    assert report["ok"] is False
    assert report["added"] == ["gamma"] and report["removed"] == []
    assert [e["file"] for e in report["errors"]] == [str(beta)]
    assert "nested too deeply" in report["errors"][0]["message"]
    # the broken file keeps its last good version: beta still logs on
    assert client.session_logon("beta", ["MAPI_NEW_SESSION"])["profile"] == "beta"
    assert client.daemon_reload(check=True)["errors"][0]["file"] == str(beta)


def test_a_deeply_nested_mapid_toml_keeps_the_settings_in_force(
    make_daemon: DaemonFactory,
) -> None:
    proc = make_daemon()
    client = proc.client()
    config = proc.config_dir / "mapid.toml"
    config.write_text(DEEP)
    (proc.config_dir / "profiles" / "gamma.toml").write_text("autologon = false\n")
    report = client.daemon_reload()
    assert report["ok"] is False and report["added"] == ["gamma"]
    assert [e["file"] for e in report["errors"]] == [str(config)]
    # default_profile = "alpha" from the last good mapid.toml is still in force
    assert client.session_logon(None, ["MAPI_USE_DEFAULT"])["profile"] == "alpha"


def test_a_profile_over_the_size_cap_is_refused_naming_the_cap(
    make_daemon: DaemonFactory,
) -> None:
    proc = make_daemon()
    client = proc.client()
    huge = proc.config_dir / "profiles" / "huge.toml"
    line = "# " + "x" * 1000 + "\n"
    huge.write_text("autologon = false\n" + line * (MAX_FILE_BYTES // len(line) + 1))
    (proc.config_dir / "profiles" / "gamma.toml").write_text("autologon = false\n")
    report = client.daemon_reload()
    assert report["ok"] is False and report["added"] == ["gamma"]
    [error] = report["errors"]
    assert error["file"] == str(huge)
    assert "1 MiB" in error["message"] and str(MAX_FILE_BYTES) in error["message"]
    huge.write_text("autologon = false\n")
    assert client.daemon_reload()["added"] == ["huge"]


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_a_maildir_service_never_turns_a_foreign_directory_into_a_maildir(
    make_daemon: DaemonFactory, tmp_path: Path
) -> None:
    thesis = tmp_path / "thesis"
    (thesis / "chapters").mkdir(parents=True)
    (thesis / "thesis.tex").write_text("\\documentclass{book}\n")
    (thesis / "chapters" / "one.tex").write_text("\\chapter{One}\n")
    before = _tree(thesis)
    empty = tmp_path / "empty"
    empty.mkdir()
    profile = (
        f'autologon = false\n[services.mail]\nservice = "maildir"\npath = "{thesis}"\n'
        f'[services.fresh]\nservice = "maildir"\npath = "{empty}"\n'
    )
    proc = make_daemon(profiles={"alpha": profile})
    client = proc.client()
    token = client.session_logon("alpha", ["MAPI_NEW_SESSION"])["token"]
    rows = client.session_status_table(token)["rows"]
    stores = [r for r in rows if r.get("PR_RESOURCE_TYPE") == ResourceType.MAPI_STORE_PROVIDER]
    failed = [r for r in stores if r["PR_STATUS_CODE"] & StatusCode.STATUS_FAILURE]
    assert len(stores) == 2 and len(failed) == 1, stores
    assert f"{thesis} is not a Maildir" in failed[0]["PR_STATUS_STRING"]
    assert _tree(thesis) == before  # nothing was written into it
    # an empty directory still becomes a Maildir
    assert (empty / "cur").is_dir() and (empty / ".Sent").is_dir()
