"""`mapictl profiles` and `mapictl services`: look at profiles and their message services."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from mapid.cli.context import JsonOpt, RuntimeOpt, TimeoutOpt, connected, options
from mapid.cli.output import console, emit_json
from mapid.constants import ResourceType, ServiceFlags, flag_names

profiles_app = typer.Typer(
    help="Profiles: named sets of message services (one TOML file each).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
services_app = typer.Typer(
    help="Message services: the installed ones, and those of a profile.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _table(*columns: str) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for name in columns:
        table.add_column(name)
    return table


@profiles_app.command("list")
def profiles_list(
    ctx: typer.Context,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = None,
    runtime_dir: RuntimeOpt = None,
) -> None:
    """The profiles the daemon knows, the default marked (profiles.table)."""
    opts = options(ctx, json_output, timeout, runtime_dir)
    with connected(opts) as client:
        rows = client.profiles_table()["rows"]
    found = [
        {"name": r["PR_DISPLAY_NAME"], "default": bool(r.get("PR_DEFAULT_PROFILE"))} for r in rows
    ]
    if opts.json:
        emit_json({"profiles": found})
        return
    table = _table("Profile", "Default")
    for item in found:
        table.add_row(item["name"], "yes" if item["default"] else "")
    console().print(table if found else "no profiles")


@services_app.command("available")
def services_available(
    ctx: typer.Context,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = None,
    runtime_dir: RuntimeOpt = None,
) -> None:
    """The installed message services (the mapid.services entry points) and their providers."""
    opts = options(ctx, json_output, timeout, runtime_dir)
    with connected(opts) as client:
        found = client.services_available()["services"]
    if opts.json:
        emit_json({"services": found})
        return
    table = _table("Service", "Display name", "Providers", "Flags", "Config keys")
    for item in found:
        providers = ", ".join(
            f"{p['name']} ({ResourceType(p['resource_type']).name})" for p in item["providers"]
        )
        keys = sorted((item.get("config_schema") or {}).get("properties", {}))
        table.add_row(
            item["name"],
            item["display_name"],
            providers,
            " ".join(flag_names(ServiceFlags, int(item["flags"]))) or "-",
            ", ".join(keys),
        )
    console().print(table)


ProfileOpt = Annotated[
    str,
    typer.Option("--profile", "-p", metavar="NAME", help="The profile to look at."),
]


@services_app.command("list")
def services_list(
    ctx: typer.Context,
    profile: ProfileOpt,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = None,
    runtime_dir: RuntimeOpt = None,
) -> None:
    """The message services of a profile, with their providers (services.table/.providers).

    Exit code 3 when the profile does not exist."""
    opts = options(ctx, json_output, timeout, runtime_dir)
    with connected(opts) as client:
        services = client.services_table(profile=profile)["rows"]
        providers = client.services_providers(profile=profile)["rows"]
    found: list[dict[str, Any]] = []
    for row in services:
        uid = row["PR_SERVICE_UID"]
        found.append(
            {
                "name": row["PR_DISPLAY_NAME"],
                "service": row["PR_SERVICE_NAME"],
                "service_uid": uid.hex(),
                "flags": flag_names(ServiceFlags, int(row["PR_RESOURCE_FLAGS"])),
                "providers": [
                    {
                        "provider_uid": p["PR_PROVIDER_UID"].hex(),
                        "display": p["PR_PROVIDER_DISPLAY"],
                        "resource_type": ResourceType(p["PR_RESOURCE_TYPE"]).name,
                        "ordinal": p["PR_PROVIDER_ORDINAL"],
                    }
                    for p in providers
                    if p["PR_SERVICE_UID"] == uid
                ],
            }
        )
    if opts.json:
        emit_json({"profile": profile, "services": found})
        return
    table = _table("Name", "Service", "Flags", "Providers", "Service UID")
    for item in found:
        table.add_row(
            item["name"],
            item["service"],
            " ".join(item["flags"]) or "-",
            ", ".join(p["resource_type"] for p in item["providers"]) or "(not installed)",
            item["service_uid"],
        )
    console().print(table if found else f"profile {profile} has no services")
