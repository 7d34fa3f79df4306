"""A store's MAPIUID, kept in a file beside the store's data (docs/design.md 4: entry IDs are
long-term), for every store that keeps one: the Maildir store's `mapid.uid` in its root,
the IMAP store's in its cache directory.

The file holds 32 hex digits. It is created once, whole and durable, with no-replace
semantics (mapid.atomic_files.create_atomic), so two logons racing on a new store agree
on one UID: the first to land wins and the other reads it.
"""

from __future__ import annotations

import contextlib
import secrets
from pathlib import Path

from mapid.atomic_files import create_atomic
from mapid.errors import ErrorCode, MapiError

__all__ = ["load_or_create_uid", "read_uid"]


def read_uid(path: Path) -> bytes | None:
    """The UID in `path`; None when there is no file; MAPI_E_CORRUPT_DATA for a bad one."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise MapiError(ErrorCode.MAPI_E_CORRUPT_DATA, f"cannot read {path}: {exc}") from exc
    try:
        uid = bytes.fromhex(text)
    except ValueError:
        uid = b""
    if len(uid) != 16:
        raise MapiError(
            ErrorCode.MAPI_E_CORRUPT_DATA,
            f"{path} does not hold a store UID (32 hex digits); repair it, or remove it "
            "to get a new one (entry IDs of this store then change)",
        )
    return uid


def load_or_create_uid(path: Path) -> bytes:
    """The UID in `path`, written there first when there is none."""
    uid = read_uid(path)
    if uid is not None:
        return uid
    with contextlib.suppress(FileExistsError):  # another logon was first: read its UID
        create_atomic(path, (secrets.token_hex(16) + "\n").encode("ascii"))
    uid = read_uid(path)
    if uid is None:
        raise MapiError(ErrorCode.MAPI_E_CALL_FAILED, f"{path} vanished while it was written")
    return uid
