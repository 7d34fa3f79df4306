"""`profiles.*` operations (PROTOCOL.md 6.2, IProfAdmin): the profile table so far."""

from __future__ import annotations

from typing import Any

from mapid.daemon.registry import OpContext, op


@op("profiles.table", token=False, table=True)
def profiles_table(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """One row per profile: PR_DISPLAY_NAME and PR_DEFAULT_PROFILE (a snapshot)."""
    assert ctx.table is not None
    default = ctx.daemon.config.default_profile
    rows = [
        {
            "PR_DISPLAY_NAME": name,
            "PR_DEFAULT_PROFILE": name == default,
            "PR_INSTANCE_KEY": name.encode("utf-8"),
        }
        for name in sorted(ctx.daemon.profiles)
    ]
    result: dict[str, Any] = ctx.table.run(rows)
    return result
