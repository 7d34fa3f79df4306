"""One table: the Maildir flags of the `:2,` suffix <-> PR_MESSAGE_FLAGS, PR_FLAG_STATUS
and PR_MSG_STATUS, both directions.

S is read (MSGFLAG_READ), D a draft (MSGFLAG_UNSENT), F flagged for follow-up
(PR_FLAG_STATUS 2), T deleted (MSGSTATUS_DELMARKED); flags mapid does not know (mutt's,
Dovecot's keywords) are kept as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mapid.constants import MessageFlags, MsgStatus
from mapid.proptags import PR_FLAG_STATUS, PR_MESSAGE_FLAGS, PR_MSG_STATUS

__all__ = ["FLAG_FOLLOWUP", "FLAG_TAGS", "apply_flags", "maildir_flags", "message_flags_of"]

FLAG_FOLLOWUP = 2
"""PR_FLAG_STATUS of a flagged message (followupFlagged, Maildir's F); 0 is not flagged."""
FLAG_TAGS = frozenset({PR_MESSAGE_FLAGS.name, PR_FLAG_STATUS.name, PR_MSG_STATUS.name})
"""The message properties kept in the file name's flags: a change of them alone renames
the file rather than rewrite it."""

_READ = int(MessageFlags.MSGFLAG_READ)
_UNSENT = int(MessageFlags.MSGFLAG_UNSENT)
_HASATTACH = int(MessageFlags.MSGFLAG_HASATTACH)


def message_flags_of(flags: str, has_attach: bool) -> int:
    """PR_MESSAGE_FLAGS from Maildir flags (S read, D draft/unsent)."""
    value = _HASATTACH if has_attach else 0
    if flags:
        if "S" in flags:
            value |= _READ
        if "D" in flags:
            value |= _UNSENT
    return value


def maildir_flags(flags: str, changes: Mapping[str, Any]) -> str:
    """The Maildir flags after PR_MESSAGE_FLAGS (read bit), PR_FLAG_STATUS and PR_MSG_STATUS
    changes; flags mapid does not know (mutt's, Dovecot's keywords) are kept."""
    chars = set(flags)
    if PR_MESSAGE_FLAGS.name in changes:
        if int(changes[PR_MESSAGE_FLAGS.name]) & MessageFlags.MSGFLAG_READ:
            chars.add("S")
        else:
            chars.discard("S")
    if PR_FLAG_STATUS.name in changes:
        if int(changes[PR_FLAG_STATUS.name]) == FLAG_FOLLOWUP:
            chars.add("F")
        else:
            chars.discard("F")
    if PR_MSG_STATUS.name in changes:
        if int(changes[PR_MSG_STATUS.name]) & MsgStatus.MSGSTATUS_DELMARKED:
            chars.add("T")
        else:
            chars.discard("T")
    return "".join(sorted(chars))


def apply_flags(props: Mapping[str, Any], flags: Mapping[str, Any]) -> dict[str, Any]:
    """The flag properties as they will be once pending flag changes are saved."""
    out: dict[str, Any] = {}
    if PR_MESSAGE_FLAGS.name in flags:
        current = int(props.get(PR_MESSAGE_FLAGS.name, 0))
        read = int(flags[PR_MESSAGE_FLAGS.name]) & MessageFlags.MSGFLAG_READ
        out[PR_MESSAGE_FLAGS.name] = (current & ~MessageFlags.MSGFLAG_READ) | read
    if PR_FLAG_STATUS.name in flags:
        out[PR_FLAG_STATUS.name] = FLAG_FOLLOWUP if flags[PR_FLAG_STATUS.name] == 2 else 0
    if PR_MSG_STATUS.name in flags:
        out[PR_MSG_STATUS.name] = int(flags[PR_MSG_STATUS.name]) & MsgStatus.MSGSTATUS_DELMARKED
    return out
