"""The daemon's own writes to profiles and mapid.toml keep the user's file and edits intact.

Real files in a temp directory, no mocks: layout survives tomlkit edits byte for byte, writes
land by rename with the file's mode, and a save made while we edit is merged, not lost.
"""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomlkit
from tomlkit.exceptions import ParseError
from tomlkit.items import Integer, Trivia

from mapid import atomic_files
from mapid.atomic_files import atomic_delete, atomic_rename
from mapid.daemon.config.daemon_config import DaemonConfig, load_daemon_config
from mapid.daemon.config.profiles import parse_profile
from mapid.daemon.config.writer import (
    WriteConflict,
    add_service,
    edit_toml,
    remove_key,
    remove_service,
    replace_service_config,
    set_value,
    unique_service_key,
    write_new_toml,
)

PROFILE = """\
# Work profile: written by hand, keep my notes!
autologon   =   true      # log on at start

[services.mail]          # the mailbox
service = "maildir"
path    = "~/Mail"        # where it lives
primary_store = true
  # archive = "~/Mail/Archive"

# Contacts come next
[services.contacts]
service = "vcard"
path = "~/.local/share/contacts"
identity = { display_name = "Ada Lovelace", email = "ada@example.org" }  # me
# sync = false


[services.outgoing]
service="smtp"
host = 'smtp.example.org'
port = 587   # submission
"""

CONTACTS_BLOCK = """\
# Contacts come next
[services.contacts]
service = "vcard"
path = "~/.local/share/contacts"
identity = { display_name = "Ada Lovelace", email = "ada@example.org" }  # me
# sync = false


"""

MAPID_TOML = """\
# mapid daemon settings
# default_profile = "old"    <- kept for reference

log_level   = "debug"   # noisy for now
lease_s = 30

[tcp]  # remote clients
endpoint = "tcp://127.0.0.1:5555"
"""


@pytest.fixture
def profile(tmp_path: Path) -> Path:
    directory = tmp_path / "profiles"
    directory.mkdir()
    path = directory / "work.toml"
    path.write_text(PROFILE, encoding="utf-8")
    path.chmod(0o600)
    return path


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def fingerprint(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_ino, info.st_mtime_ns


# --- layout ---------------------------------------------------------------------------------


def test_replacing_one_key_changes_only_its_line(profile: Path) -> None:
    new = edit_toml(
        profile,
        lambda doc: replace_service_config(
            doc, "mail", {"path": "~/Maildir", "primary_store": True}
        ),
    )
    expected = PROFILE.replace(
        'path    = "~/Mail"        # where it lives',
        'path    = "~/Maildir"        # where it lives',
    )
    assert expected != PROFILE
    assert new == expected
    assert profile.read_bytes() == expected.encode("utf-8")
    assert leftovers(profile.parent) == []


def test_an_inline_table_stays_inline(profile: Path) -> None:
    identity = {"display_name": "Ada Lovelace", "email": "ada@lovelace.org"}
    edit_toml(
        profile,
        lambda doc: replace_service_config(
            doc, "contacts", {"path": "~/.local/share/contacts", "identity": identity}
        ),
    )
    expected = PROFILE.replace('email = "ada@example.org" }', 'email = "ada@lovelace.org" }')
    assert profile.read_text(encoding="utf-8") == expected


def test_replace_removes_gone_keys_and_adds_new_ones_after_the_last_key(profile: Path) -> None:
    edit_toml(
        profile,
        lambda doc: replace_service_config(doc, "mail", {"path": "~/Mail", "readonly": False}),
    )
    expected = PROFILE.replace(
        "primary_store = true\n  # archive",
        "readonly = false\n  # archive",
    )
    assert profile.read_text(encoding="utf-8") == expected


def test_equal_values_are_left_alone_but_types_count(profile: Path) -> None:
    before = fingerprint(profile)
    same = {"host": "smtp.example.org", "port": 587}
    assert edit_toml(profile, lambda doc: replace_service_config(doc, "outgoing", same)) == PROFILE
    assert fingerprint(profile) == before
    as_float = {"host": "smtp.example.org", "port": 587.0}
    edit_toml(profile, lambda doc: replace_service_config(doc, "outgoing", as_float))
    assert profile.read_text(encoding="utf-8") == PROFILE.replace(
        "port = 587   #", "port = 587.0   #"
    )


def test_replace_of_a_missing_service_is_a_key_error(profile: Path) -> None:
    with pytest.raises(KeyError):
        edit_toml(profile, lambda doc: replace_service_config(doc, "nope", {}))
    assert profile.read_text(encoding="utf-8") == PROFILE
    assert leftovers(profile.parent) == []


def test_add_service_appends_one_block_and_keeps_the_rest(profile: Path) -> None:
    keys: list[str] = []

    def change(doc: tomlkit.TOMLDocument) -> None:
        key = unique_service_key(doc, "contacts")
        keys.append(key)
        add_service(doc, key, "vcard", {"path": "~/Shared", "readonly": True})

    new = edit_toml(profile, change)
    assert keys == ["contacts-2"]
    assert new == PROFILE + (
        '\n[services.contacts-2]\nservice = "vcard"\npath = "~/Shared"\nreadonly = true\n'
    )
    profile_obj, problems = parse_profile(profile, new)
    assert problems == [] and profile_obj is not None
    added = profile_obj.service("contacts-2")
    assert added is not None
    assert (added.service, added.config) == ("vcard", {"path": "~/Shared", "readonly": True})


def test_add_service_before_a_following_table_gets_blank_lines_both_sides(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text("[services.a]\nservice = 'x'\n[extra]\nq = 1\n", encoding="utf-8")
    edit_toml(path, lambda doc: add_service(doc, "b", "vcard", {"who": {"name": "Ada"}}))
    assert path.read_text(encoding="utf-8") == (
        "[services.a]\nservice = 'x'\n\n"
        '[services.b]\nservice = "vcard"\nwho = {name = "Ada"}\n\n'
        "[extra]\nq = 1\n"
    )


def test_add_service_to_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "new.toml"
    edit_toml(
        path, lambda doc: add_service(doc, "mail", "maildir", {"path": "~/Mail"}), create=True
    )
    assert (
        path.read_text(encoding="utf-8")
        == '[services.mail]\nservice = "maildir"\npath = "~/Mail"\n'
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_add_service_refuses_a_taken_key_and_a_service_in_config(profile: Path) -> None:
    doc = tomlkit.parse(PROFILE)
    with pytest.raises(ValueError):
        add_service(doc, "mail", "maildir", {})
    with pytest.raises(ValueError):
        add_service(doc, "x", "maildir", {"service": "other"})
    assert doc.as_string() == PROFILE


def test_remove_service_takes_its_block_and_its_own_comment(profile: Path) -> None:
    assert PROFILE.count(CONTACTS_BLOCK) == 1
    removed: list[bool] = []
    edit_toml(profile, lambda doc: removed.append(remove_service(doc, "contacts")))
    assert removed == [True]
    assert profile.read_text(encoding="utf-8") == PROFILE.replace(CONTACTS_BLOCK, "")


def test_remove_last_service_leaves_no_trailing_blank_lines(profile: Path) -> None:
    edit_toml(profile, lambda doc: remove_service(doc, "outgoing"))
    text = profile.read_text(encoding="utf-8")
    assert text == PROFILE[: PROFILE.index("[services.outgoing]")].rstrip("\n") + "\n"
    assert text.endswith("# sync = false\n")


def test_remove_service_keeps_a_comment_that_may_be_a_commented_out_key() -> None:
    src = "[services.a]\nservice = 'x'\n# path = 'old'\n[services.b]\nservice = 'y'\n"
    doc = tomlkit.parse(src)
    assert remove_service(doc, "b")
    assert doc.as_string() == "[services.a]\nservice = 'x'\n# path = 'old'\n"
    assert not remove_service(doc, "b")


def test_removing_every_service_leaves_the_rest(profile: Path) -> None:
    def change(doc: tomlkit.TOMLDocument) -> None:
        for key in ("mail", "contacts", "outgoing"):
            remove_service(doc, key)

    edit_toml(profile, change)
    assert profile.read_text(encoding="utf-8") == PROFILE[: PROFILE.index("\n[services.mail]")]


@pytest.mark.parametrize(
    "src",
    [
        "",
        "autologon = true",
        "[services]\n[services.a]\nservice = 'x'\n",
        "[services.a]\nservice = 'x'\n\n[extra]\nq = 1\n\n[services.b]\nservice = 'y'\n",
        "[services.a]\nservice = 'x'\n\n[services.a.sub]\nk = 1\n",
        "services.a.service = 'x'\n",
        "[services.a]\nservice = 'x'\npath = 'p'",
        "[[other]]\nx = 1\n[[other]]\nx = 2\n",
    ],
)
def test_add_then_remove_gives_the_file_back(src: str) -> None:
    """Odd shapes: out-of-order tables, dotted keys, no final newline, arrays of tables."""
    data = tomllib.loads(src)
    doc = tomlkit.parse(src)
    add_service(doc, "new", "vcard", {"path": "~/c"})
    added = tomllib.loads(doc.as_string())
    services = added.pop("services")
    assert services.pop("new") == {"service": "vcard", "path": "~/c"}
    assert services == data.pop("services", {})
    assert added == data
    again = tomlkit.parse(doc.as_string())
    assert remove_service(again, "new")
    assert again.as_string() in (src, src + "\n")


# --- mapid.toml -----------------------------------------------------------------------------


def test_set_default_profile_keeps_comments(tmp_path: Path) -> None:
    path = tmp_path / "mapid.toml"
    path.write_text(MAPID_TOML, encoding="utf-8")
    edit_toml(path, lambda doc: set_value(doc, ["default_profile"], "work"))
    first = MAPID_TOML.replace("lease_s = 30\n", 'lease_s = 30\ndefault_profile = "work"\n')
    assert path.read_text(encoding="utf-8") == first
    base = DaemonConfig(config_dir=tmp_path, state_dir=tmp_path, runtime_dir=tmp_path)
    config, problems = load_daemon_config(base)
    assert problems == [] and config.default_profile == "work"

    edit_toml(path, lambda doc: set_value(doc, ["default_profile"], "home"))
    assert path.read_text(encoding="utf-8") == first.replace('"work"', '"home"')
    edit_toml(path, lambda doc: set_value(doc, ["log_level"], "info"))
    assert 'log_level   = "info"   # noisy for now\n' in path.read_text(encoding="utf-8")


def test_set_value_creates_real_tables_and_keeps_inline_ones_inline(tmp_path: Path) -> None:
    path = tmp_path / "mapid.toml"
    path.write_text(MAPID_TOML, encoding="utf-8")
    edit_toml(path, lambda doc: set_value(doc, ["curve", "server", "enabled"], True))
    assert path.read_text(encoding="utf-8") == MAPID_TOML + "\n[curve.server]\nenabled = true\n"

    doc = tomlkit.parse(PROFILE)
    set_value(doc, ["services", "contacts", "identity", "email"], "ada@lovelace.org")
    set_value(doc, ["services", "contacts", "identity", "org"], "AE")
    text = doc.as_string()
    assert 'email = "ada@lovelace.org", org = "AE"}  # me\n' in text
    assert tomllib.loads(text)["services"]["contacts"]["identity"]["org"] == "AE"
    with pytest.raises(TypeError):
        set_value(doc, ["autologon", "x"], 1)
    with pytest.raises(TypeError):
        set_value(doc, ["nothing"], None)


def test_remove_key_is_idempotent(profile: Path) -> None:
    doc = tomlkit.parse(PROFILE)
    assert remove_key(doc, ["services", "mail", "path"])
    assert not remove_key(doc, ["services", "mail", "path"])
    assert not remove_key(doc, ["services", "nope", "path"])
    assert doc.as_string() == PROFILE.replace('path    = "~/Mail"        # where it lives\n', "")


def test_unique_service_key() -> None:
    doc = tomlkit.parse(PROFILE)
    assert unique_service_key(doc, "vcard") == "vcard"
    assert unique_service_key(doc, "mail") == "mail-2"
    add_service(doc, "mail-2", "maildir", {})
    assert unique_service_key(doc, "mail") == "mail-3"
    assert unique_service_key(tomlkit.document(), "mail") == "mail"


# --- files ----------------------------------------------------------------------------------


def test_an_unchanged_edit_writes_nothing(profile: Path) -> None:
    before = fingerprint(profile)
    assert edit_toml(profile, lambda doc: set_value(doc, ["autologon"], True)) == PROFILE
    assert edit_toml(profile, lambda doc: None) == PROFILE
    assert fingerprint(profile) == before


@pytest.mark.parametrize("mode", [0o600, 0o640])
def test_the_file_mode_is_kept(profile: Path, mode: int) -> None:
    profile.chmod(mode)
    edit_toml(profile, lambda doc: set_value(doc, ["autologon"], False))
    assert stat.S_IMODE(profile.stat().st_mode) == mode
    assert "autologon   =   false" in profile.read_text(encoding="utf-8")


def test_a_save_made_during_the_edit_is_not_lost(profile: Path) -> None:
    user_text = PROFILE.replace("port = 587", "port = 465")  # the user's save
    calls: list[str] = []

    def change(doc: tomlkit.TOMLDocument) -> None:
        calls.append(doc.as_string())
        if len(calls) == 1:
            profile.write_text(user_text, encoding="utf-8")
        set_value(doc, ["services", "mail", "path"], "~/Maildir")

    new = edit_toml(profile, change)
    assert calls == [PROFILE, user_text]
    text = profile.read_text(encoding="utf-8")
    assert new == text
    assert "port = 465   # submission" in text  # theirs
    assert 'path    = "~/Maildir"        # where it lives' in text  # ours
    assert text == user_text.replace('"~/Mail" ', '"~/Maildir" ')
    assert leftovers(profile.parent) == []


def test_a_save_by_rename_during_the_edit_is_not_lost(profile: Path) -> None:
    calls = 0

    def change(doc: tomlkit.TOMLDocument) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            side = profile.with_name("work.toml~")
            side.write_text(PROFILE + "\n# added in the editor\n", encoding="utf-8")
            os.replace(side, profile)
        set_value(doc, ["autologon"], False)

    edit_toml(profile, change)
    assert calls == 2
    text = profile.read_text(encoding="utf-8")
    assert text.endswith("\n# added in the editor\n")
    assert "autologon   =   false" in text


def test_a_file_created_meanwhile_is_not_clobbered(tmp_path: Path) -> None:
    path = tmp_path / "mapid.toml"
    calls = 0

    def change(doc: tomlkit.TOMLDocument) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            path.write_text('log_level = "debug"\n', encoding="utf-8")
        set_value(doc, ["default_profile"], "work")

    edit_toml(path, change, create=True)
    assert calls == 2
    assert path.read_text(encoding="utf-8") == 'log_level = "debug"\ndefault_profile = "work"\n'
    assert leftovers(tmp_path) == []


def test_retries_exhausted_is_a_conflict_and_the_users_file_stays(profile: Path) -> None:
    calls = 0

    def change(doc: tomlkit.TOMLDocument) -> None:
        nonlocal calls
        calls += 1
        profile.write_text(PROFILE + f"# save {calls}\n", encoding="utf-8")
        set_value(doc, ["autologon"], False)

    with pytest.raises(WriteConflict) as info:
        edit_toml(profile, change, retries=3)
    assert calls == 4 and info.value.attempts == 4
    assert profile.read_text(encoding="utf-8") == PROFILE + "# save 4\n"
    assert leftovers(profile.parent) == []


def test_no_temp_file_after_a_failing_change_or_an_invalid_result(profile: Path) -> None:
    def fails(doc: tomlkit.TOMLDocument) -> None:
        raise RuntimeError("boom")

    def invalid(doc: tomlkit.TOMLDocument) -> None:
        doc["bad"] = Integer(1, Trivia(), "1 2")

    with pytest.raises(RuntimeError):
        edit_toml(profile, fails)
    with pytest.raises(ValueError, match="not valid TOML"):
        edit_toml(profile, invalid)
    assert profile.read_text(encoding="utf-8") == PROFILE
    assert leftovers(profile.parent) == []
    assert sorted(p.name for p in profile.parent.iterdir()) == ["work.toml"]


def test_a_broken_user_file_is_reported_not_rewritten(profile: Path) -> None:
    profile.write_text("autologon = \n", encoding="utf-8")
    with pytest.raises(ParseError):
        edit_toml(profile, lambda doc: set_value(doc, ["autologon"], True))
    assert profile.read_text(encoding="utf-8") == "autologon = \n"


def test_a_missing_file_is_not_created_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(FileNotFoundError):
        edit_toml(path, lambda doc: set_value(doc, ["a"], 1))
    assert not path.exists()
    edit_toml(path, lambda doc: None, create=True)
    assert not path.exists()  # nothing to say, nothing created
    edit_toml(path, lambda doc: set_value(doc, ["a"], 1), create=True, mode=0o640)
    assert path.read_text(encoding="utf-8") == "a = 1\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_a_symlinked_profile_stays_a_link(tmp_path: Path) -> None:
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    real = dotfiles / "work.toml"
    real.write_text(PROFILE, encoding="utf-8")
    link = tmp_path / "work.toml"
    link.symlink_to(real)
    edit_toml(link, lambda doc: set_value(doc, ["autologon"], False))
    assert link.is_symlink()
    assert "autologon   =   false" in real.read_text(encoding="utf-8")
    assert leftovers(tmp_path) == [] and leftovers(dotfiles) == []


def test_a_hundred_sequential_edits_end_equal_to_the_last(profile: Path) -> None:
    seen: list[int] = []
    for number in range(100):

        def change(doc: tomlkit.TOMLDocument, n: int = number) -> None:
            set_value(doc, ["services", "outgoing", "port"], n)

        edit_toml(profile, change)
        seen.append(
            tomllib.loads(profile.read_text(encoding="utf-8"))["services"]["outgoing"]["port"]
        )
    assert seen == list(range(100))
    assert profile.read_text(encoding="utf-8") == PROFILE.replace("port = 587", "port = 99")
    assert leftovers(profile.parent) == []


def test_write_new_toml_refuses_an_existing_file(profile: Path) -> None:
    with pytest.raises(FileExistsError):
        write_new_toml(profile, "autologon = false\n")
    assert profile.read_text(encoding="utf-8") == PROFILE
    assert leftovers(profile.parent) == []

    doc = tomlkit.document()
    add_service(doc, "mail", "maildir", {"path": "~/Mail"})
    fresh = profile.with_name("home.toml")
    write_new_toml(fresh, doc, mode=0o640)
    assert fresh.read_text(encoding="utf-8") == doc.as_string()
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o640
    other = profile.with_name("plain.toml")
    write_new_toml(other, {"autologon": True})
    assert tomllib.loads(other.read_text(encoding="utf-8")) == {"autologon": True}
    with pytest.raises(ValueError):
        write_new_toml(profile.with_name("bad.toml"), "not = = toml")
    assert leftovers(profile.parent) == []
    assert not profile.with_name("bad.toml").exists()


def test_atomic_rename_refuses_an_existing_target(profile: Path) -> None:
    other = profile.with_name("home.toml")
    other.write_text("autologon = false\n", encoding="utf-8")
    with pytest.raises(FileExistsError):
        atomic_rename(profile, other)
    assert profile.read_text(encoding="utf-8") == PROFILE
    assert other.read_text(encoding="utf-8") == "autologon = false\n"

    renamed = profile.with_name("renamed.toml")
    atomic_rename(profile, renamed)
    assert not profile.exists() and renamed.read_text(encoding="utf-8") == PROFILE
    atomic_delete(renamed)
    assert not renamed.exists()
    with pytest.raises(FileNotFoundError):
        atomic_delete(renamed)


def test_the_link_fallback_also_refuses_an_existing_target(profile: Path) -> None:
    other = profile.with_name("home.toml")
    other.write_text("x = 1\n", encoding="utf-8")
    with pytest.raises(FileExistsError):
        atomic_files.link_then_unlink(str(profile), str(other))
    assert profile.read_text(encoding="utf-8") == PROFILE
    target = profile.with_name("moved.toml")
    atomic_files.link_then_unlink(str(profile), str(target))
    assert not profile.exists() and target.read_text(encoding="utf-8") == PROFILE


def test_the_written_profile_loads_as_before_plus_the_change(profile: Path) -> None:
    before, _ = parse_profile(profile, PROFILE)
    assert before is not None
    changes: dict[str, Any] = {"path": "~/.contacts", "identity": {"display_name": "Ada"}}
    edit_toml(profile, lambda doc: replace_service_config(doc, "contacts", changes))
    after, problems = parse_profile(profile, profile.read_text(encoding="utf-8"))
    assert problems == [] and after is not None
    assert after.service("contacts") is not None
    assert after.service("contacts").config == changes  # type: ignore[union-attr]
    assert after.service("mail") == before.service("mail")
    assert after.service("outgoing") == before.service("outgoing")
    assert after.autologon


# --- public API only (issue 13: tomlkit 0.15 removed the private insert we used) ------------


def test_a_new_top_level_key_goes_before_trailing_comments() -> None:
    doc = tomlkit.parse(
        'name = "Work"\n# primary_identity = "smtp"\n\n[services.a]\nservice = "x"\n'
    )
    set_value(doc, ["transport_order"], ["a"])
    assert doc.as_string() == (
        'name = "Work"\ntransport_order = ["a"]\n# primary_identity = "smtp"\n\n'
        '[services.a]\nservice = "x"\n'
    )


def test_a_new_key_in_a_table_keeps_its_comments_and_their_blank_lines(profile: Path) -> None:
    """The rebuilt table keeps header comment, key formatting and the spacing after it."""
    edit_toml(profile, lambda doc: set_value(doc, ["services", "contacts", "sync"], True))
    assert profile.read_text(encoding="utf-8") == PROFILE.replace(
        "# me\n# sync = false\n", "# me\nsync = true\n# sync = false\n"
    )
    edit_toml(profile, lambda doc: remove_key(doc, ["services", "contacts", "sync"]))
    assert profile.read_text(encoding="utf-8") == PROFILE


def test_tomlkit_body_is_the_live_list() -> None:
    """remove_service clears blank lines through `Container.body`; this pins that it works."""
    doc = tomlkit.parse("a = 1\n\nb = 2\n")
    body = doc.body
    index = next(i for i, (key, item) in enumerate(body) if key is None)
    body[index] = (None, tomlkit.items.Null())
    assert doc.as_string() == "a = 1\nb = 2\n"
    assert doc["b"] == 2
