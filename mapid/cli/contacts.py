"""`mapictl contacts add/edit/rm`: the personal address book, written through the protocol.

Each command logs on as the mail commands do (mapid.cli.mail.session), finds the contact or
the container over the wire, and changes it with the address-book ops: a new contact is
abcontainer.create_entry on a container opened with MAPI_MODIFY, an edit is object.set_props
and object.save_changes on the contact opened with MAPI_MODIFY, a removal is
abcontainer.delete_entries. A contact is named by its entry ID (hex, as `--json` prints it)
or by anything ab.resolve_names finds one entry for.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Annotated, Any

import typer

from mapid.cli.context import JsonOpt, Options, ProfileOpt, RuntimeOpt, TimeoutOpt, options
from mapid.cli.exits import EXIT_CODES_HELP, usage_when_bare
from mapid.cli.mail.send import explain_failure, failed_names
from mapid.cli.mail.session import MailSession, looks_like_entryid, mail_session, table_args
from mapid.cli.output import emit_json
from mapid.constants import MAPI_ONE_OFF_UID, AbContainerFlags
from mapid.entryid import uid_of
from mapid.errors import ErrorCode, MapiError
from mapid.proptags import (
    PR_COMPANY_NAME,
    PR_CONTAINER_FLAGS,
    PR_DISPLAY_NAME,
    PR_EMAIL_ADDRESS,
    PR_ENTRYID,
    PR_GIVEN_NAME,
    PR_NICKNAME,
    PR_SURNAME,
)

contacts_app = typer.Typer(
    help="Add, change and remove contacts of the personal address book (the vCard folder).",
    invoke_without_command=True,
    rich_markup_mode=None,
    epilog=EXIT_CODES_HELP,
)

NameOpt = Annotated[
    str | None,
    typer.Option(
        "--name", "-n", metavar="TEXT", help="Display name (vCard FN).", show_default=False
    ),
]
EmailOpt = Annotated[
    str | None,
    typer.Option(
        "--email",
        "-e",
        metavar="ADDRESS",
        help="E-mail address (the preferred EMAIL).",
        show_default=False,
    ),
]
GivenOpt = Annotated[
    str | None,
    typer.Option("--given", metavar="TEXT", help="Given name (N).", show_default=False),
]
SurnameOpt = Annotated[
    str | None,
    typer.Option("--surname", metavar="TEXT", help="Surname (N).", show_default=False),
]
CompanyOpt = Annotated[
    str | None,
    typer.Option("--company", metavar="TEXT", help="Company (ORG).", show_default=False),
]
NicknameOpt = Annotated[
    str | None,
    typer.Option("--nickname", metavar="TEXT", help="Nickname (NICKNAME).", show_default=False),
]
BookOpt = Annotated[
    str | None,
    typer.Option(
        "--book",
        "-b",
        metavar="NAME",
        help="The address book by display name (default: the first one that can be written).",
        show_default=False,
    ),
]
WhoArg = Annotated[
    str,
    typer.Argument(
        metavar="NAME-OR-ENTRYID",
        help="The contact: its entry ID in hex, or a name or address that finds exactly one "
        "entry (as `mapictl resolve` finds it).",
        show_default=False,
    ),
]


@contacts_app.callback()
def contacts_group(ctx: typer.Context) -> None:
    """Add, change and remove contacts of the personal address book (the vCard folder)."""
    usage_when_bare(ctx)


def _props(
    name: str | None,
    email: str | None,
    given: str | None,
    surname: str | None,
    company: str | None,
    nickname: str | None,
) -> dict[str, str]:
    given_values = (
        (PR_DISPLAY_NAME.name, name),
        (PR_EMAIL_ADDRESS.name, email),
        (PR_GIVEN_NAME.name, given),
        (PR_SURNAME.name, surname),
        (PR_COMPANY_NAME.name, company),
        (PR_NICKNAME.name, nickname),
    )
    return {tag: value for tag, value in given_values if value is not None}


def _summary(props: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "entryid": props.get(PR_ENTRYID.name),
        "name": props.get(PR_DISPLAY_NAME.name),
        "email": props.get(PR_EMAIL_ADDRESS.name),
        "given": props.get(PR_GIVEN_NAME.name),
        "surname": props.get(PR_SURNAME.name),
        "company": props.get(PR_COMPANY_NAME.name),
        "nickname": props.get(PR_NICKNAME.name),
    }


def _done(opts: Options, verb: str, props: Mapping[str, Any]) -> None:
    summary = _summary(props)
    if opts.json:
        emit_json({"ok": True, "contact": summary})
        return
    who = summary["name"] or "?"
    address = f" <{summary['email']}>" if summary["email"] else ""
    entryid = summary["entryid"]
    print(f"{verb} {who}{address}" + (f"  {entryid.hex()}" if isinstance(entryid, bytes) else ""))


def _containers(ms: MailSession) -> list[Mapping[str, Any]]:
    ab = ms.open_address_book()
    columns = [PR_ENTRYID.name, PR_DISPLAY_NAME.name, PR_CONTAINER_FLAGS.name]
    rows = ms.client.container_hierarchy_table(ms.token, ab.handle, table_args(columns))
    return list(rows.get("rows") or [])


def _writable(row: Mapping[str, Any]) -> bool:
    flags = row.get(PR_CONTAINER_FLAGS.name)
    return isinstance(flags, int) and bool(flags & AbContainerFlags.AB_MODIFIABLE)


def _container_for_add(ms: MailSession, book: str | None) -> bytes:
    rows = _containers(ms)
    if book is not None:
        named = [
            r for r in rows if str(r.get(PR_DISPLAY_NAME.name, "")).casefold() == book.casefold()
        ]
        if not named:
            known = ", ".join(repr(r.get(PR_DISPLAY_NAME.name)) for r in rows) or "none"
            raise MapiError(
                ErrorCode.MAPI_E_NOT_FOUND, f"no address book named {book!r} (there are: {known})"
            )
        return bytes(named[0][PR_ENTRYID.name])
    for row in rows:
        if _writable(row):
            return bytes(row[PR_ENTRYID.name])
    raise MapiError(ErrorCode.MAPI_E_NO_ACCESS, "no address book of this profile can be written to")


def _container_of(ms: MailSession, entryid: bytes) -> bytes:
    """The container of a contact: the one of the same provider (the same MAPIUID)."""
    for row in _containers(ms):
        eid = row.get(PR_ENTRYID.name)
        if isinstance(eid, bytes) and uid_of(eid) == uid_of(entryid):
            return eid
    raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, "no address book of this session holds it")


def _refuse_duplicate(ms: MailSession, address: str) -> None:
    """MAPI's CREATE_CHECK_DUP_STRICT, on the address: a whole address resolves to the
    contact that has it, else to a one-off."""
    ab = ms.open_address_book()
    rows = ms.client.ab_resolve_names(ms.token, ab.handle, [address]).get("recipients") or []
    entryid = rows[0].get(PR_ENTRYID.name) if rows else None
    if isinstance(entryid, bytes) and uid_of(entryid) != MAPI_ONE_OFF_UID:
        raise MapiError(
            ErrorCode.MAPI_E_COLLISION,
            f"{rows[0].get(PR_DISPLAY_NAME.name)} <{address}> is in the address book already "
            "(`mapictl contacts edit` changes it; --duplicate adds another)",
            details={"entryid": entryid},
        )


def _find(ms: MailSession, who: str) -> bytes:
    """The entry ID a NAME-OR-ENTRYID names; ambiguous is exit 1, unknown exit 3."""
    if looks_like_entryid(who):
        return bytes.fromhex(who.strip())
    ab = ms.open_address_book()
    try:
        rows = ms.client.ab_resolve_names(ms.token, ab.handle, [who]).get("recipients") or []
    except MapiError as exc:
        info = failed_names(exc).get(who)
        if info is not None:
            for line in explain_failure(who, info):
                print(line, file=sys.stderr)
        raise
    entryid = rows[0].get(PR_ENTRYID.name) if rows else None
    if not isinstance(entryid, bytes) or uid_of(entryid) == MAPI_ONE_OFF_UID:
        raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, f"no contact has the address {who!r}")
    return entryid


@contacts_app.command("add")
def add(
    ctx: typer.Context,
    name: NameOpt = None,
    email: EmailOpt = None,
    given: GivenOpt = None,
    surname: SurnameOpt = None,
    company: CompanyOpt = None,
    nickname: NicknameOpt = None,
    book: BookOpt = None,
    duplicate: Annotated[
        bool,
        typer.Option(
            "--duplicate",
            help="Add the contact even when one with this address exists already.",
        ),
    ] = False,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = None,
    runtime_dir: RuntimeOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Add a contact: `mapictl contacts add --name 'Grace Hopper' --email grace@example.org`.

    --email is required (an entry of the address book is a recipient); --name defaults to
    --given and --surname, else the address. The contact becomes a vCard 4.0 file of its
    own, named by its new UID, in the address book's folder; khard and vdirsyncer see it at
    once, and `mapictl resolve` and `send` find it. Prints the new entry ID. An address
    that a contact has already is refused (MAPI_E_COLLISION, exit 1) unless --duplicate."""
    opts = options(ctx, json_output, timeout, runtime_dir, profile)
    if not email or not email.strip():
        raise typer.BadParameter("a contact needs an address", param_hint="--email")
    props = _props(name, email, given, surname, company, nickname)
    with mail_session(opts) as ms:
        if not duplicate:
            _refuse_duplicate(ms, email.strip())
        container = _container_for_add(ms, book)
        handle = ms.open(container, modify=True).handle
        entryid = bytes(ms.client.abcontainer_create_entry(ms.token, handle, props)["entryid"])
        shown = ms.open(entryid).props
    _done(opts, "added", {**shown, PR_ENTRYID.name: entryid})


@contacts_app.command("edit")
def edit(
    ctx: typer.Context,
    who: WhoArg,
    name: NameOpt = None,
    email: EmailOpt = None,
    given: GivenOpt = None,
    surname: SurnameOpt = None,
    company: CompanyOpt = None,
    nickname: NicknameOpt = None,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = None,
    runtime_dir: RuntimeOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Change a contact: `mapictl contacts edit 'Grace Hopper' --email amazing@example.org`.

    Only the fields given change; an empty value (--company '') removes that field. The
    card keeps its UID and every line mapid does not know (notes, phone numbers, khard's
    fields). --email replaces the preferred address. A card that shares its file with other
    cards is not rewritten: that is a MAPI_E_NO_ACCESS error (exit 1)."""
    opts = options(ctx, json_output, timeout, runtime_dir, profile)
    props = _props(name, email, given, surname, company, nickname)
    if not props:
        raise typer.BadParameter(
            "say what to change: --name, --email, --given, --surname, --company or --nickname",
            param_hint="NAME-OR-ENTRYID",
        )
    with mail_session(opts) as ms:
        entryid = _find(ms, who)
        handle = ms.open(entryid, modify=True).handle
        sets = {k: v for k, v in props.items() if v.strip()}
        deletes = [k for k, v in props.items() if not v.strip()]
        problems: dict[str, Any] = {}
        if sets:
            problems.update(
                ms.client.object_set_props(ms.token, handle, sets).get("problems") or {}
            )
        if deletes:
            found = ms.client.object_delete_props(ms.token, handle, deletes).get("problems")
            problems.update(found or {})
        if problems:
            listed = ", ".join(f"{tag}: {code}" for tag, code in problems.items())
            raise MapiError(
                ErrorCode.MAPI_E_INVALID_PARAMETER,
                f"the address book refused {listed}",
                details={"problems": problems},
            )
        ms.client.object_save_changes(ms.token, handle)
        shown = ms.client.object_get_props(ms.token, handle).get("props") or {}
    _done(opts, "changed", shown)


@contacts_app.command("rm")
def rm(
    ctx: typer.Context,
    who: WhoArg,
    json_output: JsonOpt = False,
    timeout: TimeoutOpt = None,
    runtime_dir: RuntimeOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Remove a contact: `mapictl contacts rm 'Grace Hopper'`.

    The contact's card file is deleted (abcontainer.delete_entries). A name that fits
    several entries removes nothing (exit 1, the candidates on stderr); one that fits none
    is exit 3. A card that shares its file with other cards is not removed (MAPI_E_NO_ACCESS,
    exit 1)."""
    opts = options(ctx, json_output, timeout, runtime_dir, profile)
    with mail_session(opts) as ms:
        entryid = _find(ms, who)
        shown = ms.open(entryid).props
        container = ms.open(_container_of(ms, entryid), modify=True).handle
        ms.client.abcontainer_delete_entries(ms.token, container, [entryid])
    _done(opts, "removed", {**shown, PR_ENTRYID.name: entryid})


def register(app: typer.Typer) -> None:
    """Add `contacts` to mapictl."""
    app.add_typer(contacts_app, name="contacts")


__all__ = ["contacts_app", "register"]
