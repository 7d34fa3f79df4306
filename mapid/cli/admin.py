"""`mapictl profiles`, `mapictl services` and `mapictl config`: look at profiles and their
message services, change them through the daemon, and check the configuration files offline.

Every change goes through the daemon's `profiles.*` and `services.*` ops (docs/protocol.md 6.2,
6.3), which write the files with the user's comments and layout kept and then apply them as
a hand edit would be. `config validate` runs the daemon's own checker in a child process:
the CLI never imports the daemon (docs/design.md 1).
"""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from mapid.cli.completion import installed_services, profile_names, service_keys
from mapid.cli.context import JsonOpt, Options, RuntimeOpt, TimeoutOpt, connected, options
from mapid.cli.exits import ExitCode, report, usage_when_bare
from mapid.cli.output import console, emit_json
from mapid.cli.tables import Col, FitTable
from mapid.client import Client
from mapid.constants import ResourceType, ServiceFlags, flag_names
from mapid.errors import ErrorCode, MapiError, RequestTimedOut

profiles_app = typer.Typer(
    help="Profiles: named sets of message services (one TOML file each).",
    invoke_without_command=True,
    rich_markup_mode=None,
)
services_app = typer.Typer(
    help="Message services: the installed ones, and those of a profile.",
    invoke_without_command=True,
    rich_markup_mode=None,
)
config_app = typer.Typer(
    help="The configuration files (mapid.toml and the profiles), checked offline.",
    invoke_without_command=True,
    rich_markup_mode=None,
)


def _done(opts: Options, text: str, data: Mapping[str, Any]) -> None:
    """A change went through: one line for a person, or `{"ok": true, ...}` with --json."""
    if opts.json:
        emit_json({"ok": True, **data})
    else:
        print(text)


# --- profiles --------------------------------------------------------------------------------


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
    table = FitTable(Col("Profile", keep=True), Col("Default", keep=True))
    for item in found:
        table.add_row(item["name"], "yes" if item["default"] else "")
    console().print(table if found else "no profiles")


ProfileNameArg = Annotated[
    str,
    typer.Argument(
        metavar="NAME",
        help="The profile's name.",
        show_default=False,
        autocompletion=profile_names,
    ),
]
NewNameArg = Annotated[
    str,
    typer.Argument(
        metavar="NEW_NAME",
        help="The new profile's name (at most 64 characters, no leading or trailing space, "
        "no '/').",
        show_default=False,
    ),
]


@profiles_app.command("create")
def profiles_create(
    ctx: typer.Context,
    name: Annotated[
        str,
        typer.Argument(
            metavar="NAME",
            help="The new profile's name (at most 64 characters, no leading or trailing "
            "space, no '/').",
            show_default=False,
        ),
    ],
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = None,
    runtime_dir: RuntimeOpt = None,
) -> None:
    """Create an empty profile (profiles.create).

    Writes a new profile file with no services; add them with `mapictl services add`.
    Exit code 1 when the name is taken (MAPI_E_NO_ACCESS) or not a valid profile name
    (MAPI_E_INVALID_PARAMETER)."""
    opts = options(ctx, json_output, timeout, runtime_dir)
    with connected(opts) as client:
        client.profiles_create(name)
    _done(opts, f"created profile {name}", {"profile": name})


@profiles_app.command("delete")
def profiles_delete(
    ctx: typer.Context,
    name: ProfileNameArg,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = None,
    runtime_dir: RuntimeOpt = None,
) -> None:
    """Delete a profile (profiles.delete).

    The profile disappears from the table and from new logons at once. Its file goes
    when the profile's last session ends (at once when it has none). Deleting the
    default profile leaves no default. Exit code 3 when there is no such profile."""
    opts = options(ctx, json_output, timeout, runtime_dir)
    with connected(opts) as client:
        client.profiles_delete(name)
    _done(opts, f"deleted profile {name}", {"profile": name})


@profiles_app.command("copy")
def profiles_copy(
    ctx: typer.Context,
    name: ProfileNameArg,
    new_name: NewNameArg,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = None,
    runtime_dir: RuntimeOpt = None,
) -> None:
    """Copy a profile with its services under a new name (profiles.copy).

    The copy never logs on at start (autologon is off in it). Exit code 3 when NAME does
    not exist, 1 when NEW_NAME is taken or not a valid profile name."""
    opts = options(ctx, json_output, timeout, runtime_dir)
    with connected(opts) as client:
        client.profiles_copy(name, new_name)
    _done(opts, f"copied profile {name} to {new_name}", {"profile": name, "new_name": new_name})


@profiles_app.command("rename")
def profiles_rename(
    ctx: typer.Context,
    name: ProfileNameArg,
    new_name: NewNameArg,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = None,
    runtime_dir: RuntimeOpt = None,
) -> None:
    """Rename a profile (profiles.rename).

    The table and new logons use the new name at once; a profile in use keeps its file
    name until its last session ends. The default follows the rename. Exit code 3 when
    NAME does not exist, 1 when NEW_NAME is taken or not a valid profile name."""
    opts = options(ctx, json_output, timeout, runtime_dir)
    with connected(opts) as client:
        client.profiles_rename(name, new_name)
    _done(opts, f"renamed profile {name} to {new_name}", {"profile": name, "new_name": new_name})


@profiles_app.command("default")
def profiles_default(
    ctx: typer.Context,
    name: Annotated[
        str | None,
        typer.Argument(
            metavar="NAME",
            help="The profile to make the default (omit it to show the default).",
            show_default=False,
            autocompletion=profile_names,
        ),
    ] = None,
    none: Annotated[
        bool, typer.Option("--none", help="Leave no default profile.", show_default=False)
    ] = False,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = None,
    runtime_dir: RuntimeOpt = None,
) -> None:
    """Show or set the default profile (the one MAPI_USE_DEFAULT logs on).

    Without NAME it prints the default profile's name (or says there is none); with
    NAME it makes that profile the default, with --none it leaves none
    (profiles.set_default, kept as default_profile in mapid.toml). Exit code 3 when
    NAME does not exist."""
    opts = options(ctx, json_output, timeout, runtime_dir)
    if name is not None and none:
        raise typer.BadParameter("give NAME or --none, not both", param_hint="--none")
    if name is None and not none:
        with connected(opts) as client:
            rows = client.profiles_table()["rows"]
        current = next((r["PR_DISPLAY_NAME"] for r in rows if r.get("PR_DEFAULT_PROFILE")), None)
        if opts.json:
            emit_json({"default": current})
        else:
            print(current if current is not None else "no default profile")
        return
    with connected(opts) as client:
        client.profiles_set_default(name)
    text = f"default profile: {name}" if name is not None else "no default profile now"
    _done(opts, text, {"default": name})


# --- services: reading -------------------------------------------------------------------------


@services_app.command("available")
def services_available(
    ctx: typer.Context,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = None,
    runtime_dir: RuntimeOpt = None,
) -> None:
    """The installed message services (the mapid.services entry points) and their providers.

    One service a row: its name (what `services add` takes), display name, the MAPI types
    of its providers, its flags, and the configuration keys `--set` can give. --json adds
    the providers' names and each service's configuration schema."""
    opts = options(ctx, json_output, timeout, runtime_dir)
    with connected(opts) as client:
        found = client.services_available()["services"]
    if opts.json:
        emit_json({"services": found})
        return
    # The name (what `services add` takes), the providers' MAPI types and the keys (what
    # --set takes), one a line, stay whole; the rest gives way on a narrow terminal (--json
    # has it all, provider names included).
    table = FitTable(
        Col("Service", keep=True),
        Col("Display name"),
        Col("Providers", keep=True),
        Col("Flags"),
        Col("Config keys", keep=True),
    )
    for item in found:
        providers = "\n".join(ResourceType(p["resource_type"]).name for p in item["providers"])
        keys = sorted((item.get("config_schema") or {}).get("properties", {}))
        table.add_row(
            item["name"],
            item["display_name"],
            providers,
            "\n".join(flag_names(ServiceFlags, int(item["flags"]))) or "-",
            "\n".join(keys) or "-",
        )
    console().print(table)


ProfileOpt = Annotated[
    str,
    typer.Option(
        "--profile",
        "-p",
        metavar="NAME",
        help="The profile to look at.",
        autocompletion=profile_names,
    ),
]


def service_key(row: Mapping[str, Any]) -> str | None:
    """The `[services.KEY]` of a services.table row (PR_MAPID_SERVICE_KEY,
    docs/protocol.md 6.3); None from a daemon too old to send it."""
    key = row.get("PR_MAPID_SERVICE_KEY")
    return key if isinstance(key, str) and key else None


@services_app.command("list")
def services_list(
    ctx: typer.Context,
    profile: ProfileOpt,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = None,
    runtime_dir: RuntimeOpt = None,
) -> None:
    """The message services of a profile, with their providers (services.table/.providers).

    Key is the name of the service's [services.KEY] section: what `services configure`,
    `remove`, `copy` and `identity` take (they take the service UID too). Name is the
    display name. --json adds the service and provider UIDs. Exit code 3 when the profile
    does not exist."""
    opts = options(ctx, json_output, timeout, runtime_dir)
    with connected(opts) as client:
        services = client.services_table(profile=profile)["rows"]
        providers = client.services_providers(profile=profile)["rows"]
    found: list[dict[str, Any]] = []
    for row in services:
        uid = row["PR_SERVICE_UID"]
        found.append(
            {
                "key": service_key(row),
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
    table = FitTable(
        Col("Key", keep=True),
        Col("Name"),
        Col("Service", keep=True),
        Col("Flags"),
        Col("Providers"),
    )
    for item in found:
        table.add_row(
            item["key"] if item["key"] is not None else item["service_uid"],
            item["name"],
            item["service"],
            "\n".join(item["flags"]) or "-",
            "\n".join(p["resource_type"] for p in item["providers"]) or "(not installed)",
        )
    console().print(table if found else f"profile {profile} has no services")


# --- services: changing --------------------------------------------------------------------------

ChangeProfileOpt = Annotated[
    str,
    typer.Option(
        "--profile",
        "-p",
        metavar="NAME",
        help="The profile to change.",
        autocompletion=profile_names,
    ),
]
ServiceArg = Annotated[
    str,
    typer.Argument(
        metavar="SERVICE",
        help="The service: its key as `mapictl services list` shows it (the KEY of its "
        "[services.KEY] section), its display name, or its UID in hex.",
        show_default=False,
        autocompletion=service_keys,
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        metavar="KEY=VALUE",
        help="A configuration value; repeatable. VALUE is read as a TOML value when it is "
        'one (true, 3, "text", [1, 2]), else taken as plain text; a dotted KEY '
        "(identity.email=...) sets a key of a nested table.",
        show_default=False,
    ),
]


def parse_value(text: str) -> Any:
    """A --set VALUE: what it means as a TOML value, else the text itself.

    Dates and times stay text: a configuration holds them as strings, and `2024-01-01`
    meant as a name should not turn into a date."""
    try:
        parsed = tomllib.loads(f"value = {text}")
    except (tomllib.TOMLDecodeError, RecursionError):
        return text
    if list(parsed) != ["value"] or _has_time(parsed["value"]):
        return text
    return parsed["value"]


def _has_time(value: Any) -> bool:
    if isinstance(value, dt.date | dt.time):
        return True
    if isinstance(value, list):
        return any(_has_time(v) for v in value)
    if isinstance(value, dict):
        return any(_has_time(v) for v in value.values())
    return False


def parse_settings(items: Sequence[str]) -> dict[str, Any]:
    """The --set KEY=VALUE items as one config map; a dotted key builds nested maps."""
    config: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        parts = [part.strip() for part in key.split(".")]
        if not sep or not all(parts):
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--set")
        target = config
        for depth, part in enumerate(parts[:-1]):
            inner = target.setdefault(part, {})
            if not isinstance(inner, dict):
                where = ".".join(parts[: depth + 1])
                raise typer.BadParameter(f"{where} is given a value and keys", param_hint="--set")
            target = inner
        if parts[-1] in target:
            raise typer.BadParameter(f"{'.'.join(parts)} is given twice", param_hint="--set")
        target[parts[-1]] = parse_value(raw)
    return config


def parse_uid(text: str, hint: str) -> bytes:
    """A UID given in hex (a usage error otherwise)."""
    try:
        uid = bytes.fromhex(text.strip())
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a hex string", param_hint=hint) from None
    if not uid:
        raise typer.BadParameter("empty", param_hint=hint)
    return uid


def resolve_service(client: Client, profile: str, service: str) -> bytes:
    """The PR_SERVICE_UID of SERVICE in the profile: a UID in hex, a section key (the Key
    of `services list`), or a display name. A key is tried before display names, as keys
    are unique in a profile and names need not be. Not there: MAPI_E_NOT_FOUND (exit code
    3); a display name that several services share: a usage error."""
    rows = client.services_table(profile=profile)["rows"]
    uids = [bytes(r["PR_SERVICE_UID"]) for r in rows]
    try:
        given: bytes | None = bytes.fromhex(service.strip())
    except ValueError:
        given = None
    if given and given in uids:
        return given
    keyed = [bytes(r["PR_SERVICE_UID"]) for r in rows if service_key(r) == service]
    if keyed:
        return keyed[0]
    named = [bytes(r["PR_SERVICE_UID"]) for r in rows if r["PR_DISPLAY_NAME"] == service]
    if len(named) > 1:
        raise typer.BadParameter(
            f"{len(named)} services of {profile} are named {service!r}; give the key or the "
            "service UID (see `mapictl services list`)",
            param_hint="SERVICE",
        )
    if named:
        return named[0]
    raise MapiError(
        ErrorCode.MAPI_E_NOT_FOUND,
        f"profile {profile} has no service {service!r} (see `mapictl services list -p {profile}`)",
        details={"profile": profile, "service": service},
    )


@contextmanager
def config_errors(opts: Options) -> Iterator[None]:
    """A configuration the daemon refused (MAPI_E_INVALID_PARAMETER with `details.errors`):
    the error as usual, then each problem as `KEY: MESSAGE` on stderr."""
    try:
        yield
    except MapiError as exc:
        errors = exc.details.get("errors")
        if exc.code is not ErrorCode.MAPI_E_INVALID_PARAMETER or not isinstance(errors, list):
            raise
        code = report(exc, opts.json)
        for error in errors:
            if isinstance(error, Mapping):
                key, message = error.get("key"), error.get("message", "")
                print(f"{key}: {message}" if key else str(message), file=sys.stderr)
        raise typer.Exit(int(code)) from None


@services_app.command("add")
def services_add(
    ctx: typer.Context,
    service_name: Annotated[
        str,
        typer.Argument(
            metavar="SERVICE_NAME",
            help="An installed message service (see `mapictl services available`).",
            show_default=False,
            autocompletion=installed_services,
        ),
    ],
    profile: ChangeProfileOpt,
    name: Annotated[
        str | None,
        typer.Option(
            "--name", metavar="DISPLAY", help="The service's display name.", show_default=False
        ),
    ] = None,
    settings: SetOpt = None,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = None,
    runtime_dir: RuntimeOpt = None,
) -> None:
    """Add a message service to a profile (services.create).

    Writes a [services.KEY] section, KEY being the service's name made unique in the
    profile (vcard, vcard-2), with the --set values. Prints the new service's UID (hex) on
    stdout and its KEY, which `services configure` and `remove` take, on stderr ("key" in
    --json). Keys the service requires may still be missing; add them with `services
    configure KEY`. Exit code 3 when the profile or the service does not exist; 1 when a
    value is refused (each as KEY: MESSAGE on stderr) or when the service allows one copy
    per profile and the profile has it."""
    opts = options(ctx, json_output, timeout, runtime_dir)
    config = parse_settings(settings or [])
    with connected(opts) as client, config_errors(opts):
        result = client.services_create(
            profile=profile, service_name=service_name, display_name=name, config=config or None
        )
    uid = bytes(result["service_uid"])
    key = result.get("key") if isinstance(result.get("key"), str) else None
    if opts.json:
        emit_json(
            {
                "ok": True,
                "profile": profile,
                "service": service_name,
                "name": name,
                "key": key,
                "service_uid": uid.hex(),
            }
        )
    else:
        print(uid.hex())
        if key is not None:
            print(f"added {service_name} to profile {profile} as key {key}", file=sys.stderr)


@services_app.command("configure")
def services_configure(
    ctx: typer.Context,
    service: ServiceArg,
    profile: ChangeProfileOpt,
    settings: SetOpt = None,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = None,
    runtime_dir: RuntimeOpt = None,
) -> None:
    """Change a service's configuration (services.configure).

    The --set values are merged into the service's section, which is checked against
    the service's schema before anything is written; live sessions of the profile
    follow the change. Exit code 1 when the configuration is refused (each problem as
    KEY: MESSAGE on stderr), 3 when the profile or the service does not exist."""
    opts = options(ctx, json_output, timeout, runtime_dir)
    config = parse_settings(settings or [])
    if not config:
        raise typer.BadParameter("give at least one KEY=VALUE", param_hint="--set")
    with connected(opts) as client, config_errors(opts):
        uid = resolve_service(client, profile, service)
        client.services_configure(profile=profile, service_uid=uid, config=config)
    _done(
        opts,
        f"configured {service} in profile {profile}",
        {"profile": profile, "service_uid": uid.hex()},
    )


@services_app.command("remove")
def services_remove(
    ctx: typer.Context,
    service: ServiceArg,
    profile: ChangeProfileOpt,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = None,
    runtime_dir: RuntimeOpt = None,
) -> None:
    """Remove a message service from a profile (services.delete).

    Its section leaves the profile file, and live sessions of the profile log its
    providers off. Exit code 3 when the profile or the service does not exist."""
    opts = options(ctx, json_output, timeout, runtime_dir)
    with connected(opts) as client, config_errors(opts):
        uid = resolve_service(client, profile, service)
        client.services_delete(profile=profile, service_uid=uid)
    _done(
        opts,
        f"removed {service} from profile {profile}",
        {"profile": profile, "service_uid": uid.hex()},
    )


@services_app.command("copy")
def services_copy(
    ctx: typer.Context,
    service: ServiceArg,
    profile: Annotated[
        str,
        typer.Option(
            "--profile",
            "-p",
            metavar="NAME",
            help="The profile to copy from.",
            autocompletion=profile_names,
        ),
    ],
    to_profile: Annotated[
        str,
        typer.Option(
            "--to",
            metavar="OTHER",
            help="The profile to copy the service into.",
            autocompletion=profile_names,
        ),
    ],
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = None,
    runtime_dir: RuntimeOpt = None,
) -> None:
    """Copy a message service with its configuration into another profile (services.copy).

    Prints the copy's service UID (hex) in OTHER. Exit code 3 when a profile or the
    service does not exist, 1 when the service allows one copy per profile and OTHER has
    it."""
    opts = options(ctx, json_output, timeout, runtime_dir)
    with connected(opts) as client, config_errors(opts):
        uid = resolve_service(client, profile, service)
        result = client.services_copy(profile=profile, service_uid=uid, to_profile=to_profile)
    copied = result.get("service_uid")
    new_uid = bytes(copied).hex() if isinstance(copied, bytes | bytearray) else None
    if opts.json:
        emit_json(
            {
                "ok": True,
                "profile": profile,
                "service_uid": uid.hex(),
                "to_profile": to_profile,
                "new_service_uid": new_uid,
            }
        )
    else:
        print(new_uid if new_uid is not None else f"copied {service} to profile {to_profile}")


@services_app.command("identity")
def services_identity(
    ctx: typer.Context,
    service: Annotated[
        str | None,
        typer.Argument(
            metavar="SERVICE",
            help="The service that supplies the identity: its key as `mapictl services "
            "list` shows it, its display name, or its UID in hex.",
            show_default=False,
            autocompletion=service_keys,
        ),
    ] = None,
    *,
    profile: ChangeProfileOpt,
    none: Annotated[
        bool,
        typer.Option("--none", help="No service supplies the identity.", show_default=False),
    ] = False,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = None,
    runtime_dir: RuntimeOpt = None,
) -> None:
    """Choose the service that supplies the profile's identity (services.set_primary_identity).

    With --none no service does (session.query_identity then answers MAPI_W_NO_SERVICE).
    Exit code 1 when the service cannot supply an identity (MAPI_E_NO_ACCESS), 3 when the
    profile or the service does not exist."""
    opts = options(ctx, json_output, timeout, runtime_dir)
    if service is not None and none:
        raise typer.BadParameter("give SERVICE or --none, not both", param_hint="--none")
    if service is None and not none:
        raise typer.BadParameter("give SERVICE, or --none for no identity", param_hint="SERVICE")
    with connected(opts) as client, config_errors(opts):
        uid = resolve_service(client, profile, service) if service is not None else None
        client.services_set_primary_identity(profile=profile, service_uid=uid)
    text = (
        f"{service} supplies the identity of profile {profile}"
        if service is not None
        else f"no service supplies the identity of profile {profile}"
    )
    _done(opts, text, {"profile": profile, "service_uid": uid.hex() if uid else None})


@services_app.command("order")
def services_order(
    ctx: typer.Context,
    provider_uids: Annotated[
        list[str],
        typer.Argument(
            metavar="PROVIDER_UID",
            help="Every transport provider of the profile, by its UID in hex, in the order "
            "they should be tried (see `mapictl services list -p NAME --json`).",
            show_default=False,
        ),
    ],
    profile: ChangeProfileOpt,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = None,
    runtime_dir: RuntimeOpt = None,
) -> None:
    """Set the order in which the profile's transports are tried (services.transport_order).

    Name each transport provider once. Exit code 1 when the count differs from the
    profile's transports (MAPI_E_BUSY), 3 when a UID is not a transport of the profile
    or the profile does not exist."""
    opts = options(ctx, json_output, timeout, runtime_dir)
    uids = [parse_uid(text, "PROVIDER_UID") for text in provider_uids]
    with connected(opts) as client, config_errors(opts):
        client.services_transport_order(profile=profile, provider_uids=uids)
    _done(
        opts,
        f"transport order of profile {profile}: " + ", ".join(u.hex() for u in uids),
        {"profile": profile, "provider_uids": [u.hex() for u in uids]},
    )


# --- config --------------------------------------------------------------------------------------


@config_app.callback()
def config_group(ctx: typer.Context) -> None:
    """The configuration files (mapid.toml and the profiles), checked offline."""
    usage_when_bare(ctx)


@profiles_app.callback()
def profiles_group(ctx: typer.Context) -> None:
    """Profiles: named sets of message services (one TOML file each)."""
    usage_when_bare(ctx)


@services_app.callback()
def services_group(ctx: typer.Context) -> None:
    """Message services: the installed ones, and those of a profile."""
    usage_when_bare(ctx)


VALIDATE_TIMEOUT = 60.0
"""How long `config validate` waits for the checker when no --timeout is given."""

ValidateTimeoutOpt = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        metavar="SECONDS",
        min=0.001,
        help=f"How long the check may take (default {VALIDATE_TIMEOUT:g}).",
        show_default=False,
    ),
]

_PROBLEM_LINE = re.compile(r"^(?P<file>\S.*?):(?P<line>\d+): (?P<message>.*)$")
_PROBLEM_NO_LINE = re.compile(r"^(?P<file>\S.*?): (?P<message>.*)$")


def parse_problems(text: str) -> list[dict[str, Any]]:
    """`mapid check-config`'s FILE:LINE: MESSAGE (or FILE: MESSAGE) lines as
    {"file", "line", "message"}; a line that starts no problem continues the last one."""
    problems: list[dict[str, Any]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        match = _PROBLEM_LINE.match(line)
        if match:
            problems.append(
                {
                    "file": match["file"],
                    "line": int(match["line"]),
                    "message": match["message"],
                }
            )
            continue
        match = _PROBLEM_NO_LINE.match(line)
        if match:
            problems.append({"file": match["file"], "line": None, "message": match["message"]})
        elif problems:
            problems[-1]["message"] += "\n" + line
        else:
            problems.append({"file": None, "line": None, "message": line})
    return problems


@config_app.command("validate")
def config_validate(
    ctx: typer.Context,
    path: Annotated[
        Path | None,
        typer.Argument(
            metavar="PATH",
            help="A configuration directory, holding mapid.toml and profiles/ (default: "
            "the daemon's: $MAPID_CONFIG_DIR, else $XDG_CONFIG_HOME/mapid).",
            exists=True,
            file_okay=False,
            show_default=False,
        ),
    ] = None,
    system: Annotated[
        bool, typer.Option("--system", help="Check the machine's configuration, /etc/mapid.")
    ] = False,
    json_output: JsonOpt = False,
    timeout: ValidateTimeoutOpt = None,
    runtime_dir: RuntimeOpt = None,
) -> None:
    """Check mapid.toml and every profile without a daemon (like `nginx -t`).

    Runs `mapid check-config` (the daemon's own checker, in a child process) and passes
    on what it says: each problem as FILE:LINE: MESSAGE on stderr, then a summary. With
    --json one object {"ok", "problems": [{"file", "line", "message"}...], "summary"}.
    Exit code 0 when all is well, 1 when there are problems, 5 when the check takes
    longer than --timeout (default 60 s here)."""
    opts = options(ctx, json_output, timeout, runtime_dir)
    given = timeout if timeout is not None else ctx.find_root().params.get("timeout")
    limit = float(given) if given is not None else VALIDATE_TIMEOUT
    command = [sys.executable, "-m", "mapid", "check-config"]
    if path is not None:
        command.append(str(path))
    if system:
        command.append("--system")
    try:
        proc = subprocess.run(
            command, capture_output=True, text=True, timeout=limit, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        late = RequestTimedOut(
            f"mapid check-config did not finish within {limit:g} s", op="check-config"
        )
        raise typer.Exit(int(report(late, opts.json))) from None
    if proc.returncode not in (ExitCode.OK, ExitCode.MAPI_ERROR):
        # Not a verdict on the files (a usage error, a crash): pass it on as it is.
        sys.stderr.write(proc.stderr)
        sys.stdout.write(proc.stdout)
        if opts.json:
            message = proc.stderr.strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
            emit_json(
                {
                    "error": {
                        "code": "CLIENT_ERROR",
                        "message": f"mapid check-config: {message[0]}",
                        "retryable": False,
                        "details": {"exit_code": proc.returncode},
                    }
                }
            )
        raise typer.Exit(proc.returncode)
    if opts.json:
        emit_json(
            {
                "ok": proc.returncode == 0,
                "problems": parse_problems(proc.stderr),
                "summary": proc.stdout.strip(),
            }
        )
        if proc.returncode:
            print("mapictl: the configuration has problems", file=sys.stderr)
    else:
        sys.stderr.write(proc.stderr)
        sys.stderr.flush()
        sys.stdout.write(proc.stdout)
    raise typer.Exit(proc.returncode)
