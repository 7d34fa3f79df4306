"""`profiles.*` operations (docs/protocol.md 6.2, IProfAdmin); no token needed.

Each change is written to the files and then reloaded like a hand edit; see profile_admin.
"""

from __future__ import annotations

from typing import Any

from mapid.daemon.bus.registry import OpContext, Str, op
from mapid.daemon.ops.common import table_of

NAME = Str(required=True, max_len=4096)


@op("profiles.table", token=False, table=True)
def profiles_table(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """One row per profile: PR_DISPLAY_NAME and PR_DEFAULT_PROFILE (a snapshot)."""
    default = ctx.daemon.config.default_profile
    rows = [
        {
            "PR_DISPLAY_NAME": name,
            "PR_DEFAULT_PROFILE": name == default,
            "PR_INSTANCE_KEY": name.encode("utf-8"),
        }
        for name in sorted(ctx.daemon.profiles)
    ]
    result: dict[str, Any] = table_of(ctx).run(rows)
    return result


@op("profiles.create", token=False, args={"name": NAME})
async def profiles_create(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """A new, empty profile file (name taken: MAPI_E_NO_ACCESS)."""
    await ctx.daemon.admin.create(args["name"], ctx.daemon.profiles)
    return {}


@op("profiles.delete", token=False, args={"name": NAME})
async def profiles_delete(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Delete a profile; one in use is hidden at once and goes with its last session."""
    daemon = ctx.daemon
    await daemon.admin.delete(args["name"], daemon.profiles, daemon.config.default_profile)
    return {}


@op("profiles.copy", token=False, args={"name": NAME, "new_name": NAME})
async def profiles_copy(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    await ctx.daemon.admin.copy(args["name"], args["new_name"], ctx.daemon.profiles)
    return {}


@op("profiles.rename", token=False, args={"name": NAME, "new_name": NAME})
async def profiles_rename(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Rename a profile; one in use is renamed for new logons at once, on disk later."""
    daemon = ctx.daemon
    await daemon.admin.rename(
        args["name"], args["new_name"], daemon.profiles, daemon.config.default_profile
    )
    return {}


@op("profiles.set_default", token=False, args={"name": Str(required=True, nullable=True)})
async def profiles_set_default(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """The default profile for MAPI_USE_DEFAULT logons; nil leaves none."""
    await ctx.daemon.admin.set_default(args["name"], ctx.daemon.profiles)
    return {}
