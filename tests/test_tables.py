"""Table arguments (docs/protocol.md 5): columns, every restriction kind, sort, offset, limit.

The first tests go through `session.status_table` on the real daemon; the rest drive
`TableQuery` directly over hand-made rows, to reach the corners a status table lacks.
"""

from __future__ import annotations

from typing import Any

import pytest

from mapid.client import Client
from mapid.daemon.sessions.table_query import TableQuery
from mapid.errors import ErrorCode, MapiError


@pytest.fixture
def token(client: Client) -> bytes:
    return bytes(client.session_logon("alpha", ["MAPI_NEW_SESSION"])["token"])


def table(client: Client, token: bytes, **args: Any) -> dict[str, Any]:
    return dict(client.session_status_table(token, args))


def test_all_columns_and_total(client: Client, token: bytes) -> None:
    result = table(client, token)
    assert result["total"] == len(result["rows"]) == 5
    assert isinstance(result["seq"], int)
    assert [r["PR_ROWID"] for r in result["rows"]] == sorted(r["PR_ROWID"] for r in result["rows"])


def test_columns_by_name_and_hex_always_carry_the_instance_key(
    client: Client, token: bytes
) -> None:
    rows = table(client, token, columns=["PR_DISPLAY_NAME", "0x3E030003"])["rows"]
    for row in rows:
        assert set(row) == {"PR_DISPLAY_NAME", "PR_RESOURCE_TYPE", "PR_INSTANCE_KEY"}


def test_a_column_a_row_lacks_is_absent(client: Client, token: bytes) -> None:
    rows = table(client, token, columns=["PR_IDENTITY_DISPLAY"])["rows"]
    assert sum("PR_IDENTITY_DISPLAY" in r for r in rows) == 1


def test_restrictions_on_the_status_table(client: Client, token: bytes) -> None:
    def count(restriction: dict[str, Any]) -> int:
        return int(table(client, token, restriction=restriction)["total"])

    mapi = {"prop": "PR_PROVIDER_DLL_NAME", "op": "eq", "value": "mapid"}
    assert count(mapi) == 3
    assert count({"not": mapi}) == 2
    assert count({"and": [mapi, {"prop": "PR_RESOURCE_TYPE", "op": "eq", "value": 37}]}) == 1
    assert count({"or": [mapi, {"exists": "PR_IDENTITY_ENTRYID"}]}) == 4
    assert count({"prop": "PR_RESOURCE_TYPE", "op": "ge", "value": 37}) == 2
    assert count({"prop": "PR_RESOURCE_TYPE", "op": "lt", "value": 34}) == 1
    assert count({"bitmask": "PR_STATUS_CODE", "mask": 1, "test": "nez"}) == 5
    assert count({"bitmask": "PR_STATUS_CODE", "mask": 4, "test": "eqz"}) == 5
    assert count({"content": "PR_DISPLAY_NAME", "value": "mapi", "match": "prefix"}) == 0
    assert (
        count(
            {
                "content": "PR_DISPLAY_NAME",
                "value": "mapi",
                "match": "prefix",
                "ignore_case": True,
            }
        )
        == 2
    )
    assert count({"content": "PR_DISPLAY_NAME", "value": "Spool", "match": "substring"}) == 1
    assert count({"content": "PR_DISPLAY_NAME", "value": "alpha", "match": "full"}) == 1


def test_sort_offset_limit(client: Client, token: bytes) -> None:
    ordered = table(client, token, sort=[["PR_RESOURCE_TYPE", "desc"]])["rows"]
    kinds = [r["PR_RESOURCE_TYPE"] for r in ordered]
    assert kinds == sorted(kinds, reverse=True)
    page = table(
        client,
        token,
        sort=[["PR_RESOURCE_TYPE", "asc"]],
        offset=1,
        limit=2,
        columns=["PR_RESOURCE_TYPE"],
    )
    assert page["total"] == 5
    assert [r["PR_RESOURCE_TYPE"] for r in page["rows"]] == sorted(kinds)[1:3]
    beyond = table(client, token, offset=50)
    assert beyond == {"rows": [], "total": 5, "seq": beyond["seq"]}


@pytest.mark.parametrize(
    "args",
    [
        {"columns": "PR_DISPLAY_NAME"},
        {"columns": []},
        {"columns": ["PR_NO_SUCH_TAG"]},
        {"columns": ["0x123"]},
        {"restriction": []},
        {"restriction": {"prop": "PR_DISPLAY_NAME", "op": "like", "value": "x"}},
        {"restriction": {"prop": "PR_DISPLAY_NAME", "op": "eq"}},
        {"restriction": {"bitmask": "PR_STATUS_CODE", "mask": "1", "test": "nez"}},
        {"restriction": {"bitmask": "PR_STATUS_CODE", "mask": 1, "test": "maybe"}},
        {"restriction": {"content": "PR_DISPLAY_NAME", "value": 3}},
        {"restriction": {"content": "PR_DISPLAY_NAME", "value": "x", "match": "regex"}},
        {"restriction": {"and": {"exists": "PR_ENTRYID"}}},
        {"restriction": {"unknown": 1}},
        {"sort": [["PR_DISPLAY_NAME", "up"]]},
        {"sort": "PR_DISPLAY_NAME"},
        {"offset": -1},
        {"offset": True},
        {"limit": 0},
        {"limit": "3"},
    ],
)
def test_bad_table_arguments(client: Client, token: bytes, args: dict[str, Any]) -> None:
    with pytest.raises(MapiError) as info:
        client.session_status_table(token, args)
    assert info.value.code == ErrorCode.MAPI_E_INVALID_PARAMETER


ROWS = [
    {
        "PR_INSTANCE_KEY": b"1",
        "PR_DISPLAY_NAME": "b",
        "PR_RESOURCE_TYPE": 3,
        "PR_SEARCH_KEY": b"ab",
    },
    {"PR_INSTANCE_KEY": b"2", "PR_DISPLAY_NAME": "A", "PR_RESOURCE_TYPE": 1},
    {"PR_INSTANCE_KEY": b"3", "PR_RESOURCE_TYPE": 2, "PR_SEARCH_KEY": b"xy"},
    {"PR_INSTANCE_KEY": b"4", "PR_DISPLAY_NAME": "c", "PR_RESOURCE_TYPE": True},
]


def run(**args: Any) -> list[bytes]:
    return [r["PR_INSTANCE_KEY"] for r in TableQuery.parse(args).run(ROWS)["rows"]]


def test_rows_without_the_sort_column_go_last_both_ways() -> None:
    assert run(sort=[["PR_DISPLAY_NAME", "asc"]]) == [b"2", b"1", b"4", b"3"]
    assert run(sort=[["PR_DISPLAY_NAME", "desc"]]) == [b"4", b"1", b"2", b"3"]


def test_multi_key_sort_is_stable() -> None:
    rows = [
        {"PR_INSTANCE_KEY": bytes([i]), "PR_RESOURCE_TYPE": i % 2, "PR_ROWID": i} for i in range(6)
    ]
    query = TableQuery.parse({"sort": [["PR_RESOURCE_TYPE", "asc"], ["PR_ROWID", "desc"]]})
    got = [r["PR_ROWID"] for r in query.run(rows)["rows"]]
    assert got == [4, 2, 0, 5, 3, 1]


def test_missing_properties_and_mixed_types_in_restrictions() -> None:
    assert run(restriction={"prop": "PR_DISPLAY_NAME", "op": "ne", "value": "b"}) == [b"2", b"4"]
    # bool is not an int for comparisons or bitmasks
    assert run(restriction={"prop": "PR_RESOURCE_TYPE", "op": "ge", "value": 1}) == [
        b"1",
        b"2",
        b"3",
    ]
    assert run(restriction={"bitmask": "PR_RESOURCE_TYPE", "mask": 1, "test": "nez"}) == [
        b"1",
        b"2",
    ]
    assert run(restriction={"prop": "PR_DISPLAY_NAME", "op": "gt", "value": 3}) == []


def test_content_on_binary_values() -> None:
    assert run(restriction={"content": "PR_SEARCH_KEY", "value": b"a", "match": "prefix"}) == [b"1"]
    assert run(restriction={"content": "PR_SEARCH_KEY", "value": b"y", "match": "substring"}) == [
        b"3"
    ]


def test_restriction_checked_even_on_an_empty_table() -> None:
    with pytest.raises(MapiError):
        TableQuery.parse({"restriction": {"prop": "PR_X", "op": "eq", "value": 1}}).run([])
