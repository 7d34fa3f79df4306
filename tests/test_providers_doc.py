"""docs/providers.md stays true: its code is the shipped code, its reference names every
public part of the provider API, its profile example passes the service's checks, and it
points only inside the repository.

- An excerpt is a fenced block right after a line `<!-- from: PATH -->`: each run of its
  lines between lines of `...` must be in PATH word for word.
- The reference must name, in backticks, every class, method, attribute and module-level
  name that `mapid/providers/base.py` defines (read with ast, so an import is not counted),
  and the hooks the daemon calls by name without the base classes defining them.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

from mapid.providers.sendmail import SendmailService

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "providers.md"
BASE = ROOT / "mapid" / "providers" / "base.py"

OPTIONAL_HOOKS = ("row_flags",)
"""Hooks the daemon calls where a provider has them (getattr), not defined in base.py."""

_BLOCK = re.compile(
    r"^<!-- (from: (?P<path>\S+)|(?P<tag>profile)) -->\n```\w*\n(?P<code>.*?)^```$", re.M | re.S
)


def text() -> str:
    return DOC.read_text(encoding="utf-8")


def excerpts() -> list[tuple[str, str]]:
    return [(m["path"], m["code"]) for m in _BLOCK.finditer(text()) if m["path"]]


def test_the_doc_has_excerpts_of_every_sendmail_module() -> None:
    paths = {path for path, _code in excerpts()}
    for module in ("config", "service", "transport", "program", "exits"):
        assert f"mapid/providers/sendmail/{module}.py" in paths
    assert {"pyproject.toml", "tests/test_sendmail.py"} <= paths


@pytest.mark.parametrize(("path", "code"), excerpts(), ids=lambda v: v[:40].strip())
def test_each_excerpt_is_in_its_file_word_for_word(path: str, code: str) -> None:
    source = (ROOT / path).read_text(encoding="utf-8")
    runs = re.split(r"^\.\.\.\n", code, flags=re.M)
    for run in runs:
        assert run.strip(), f"an empty run in the excerpt of {path}"
        assert run in source, f"docs/providers.md quotes {path} wrongly:\n{run}"


def test_the_profile_example_passes_the_checks() -> None:
    [block] = [m["code"] for m in _BLOCK.finditer(text()) if m["tag"] == "profile"]
    section = dict(tomllib.loads(block)["services"]["outgoing"])
    assert section.pop("service") == SendmailService.name
    problems = SendmailService.check_config(section)
    # The example names msmtp: on a machine without it that one problem is expected.
    assert [p for p in problems if "does not exist" not in p.message] == []


def api_names() -> dict[str, set[str]]:
    """Each public name base.py defines -> the names it holds (a class's members)."""
    tree = ast.parse(BASE.read_text(encoding="utf-8"))
    found: dict[str, set[str]] = {}

    def targets(node: ast.stmt) -> list[str]:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            return [node.target.id]
        if isinstance(node, ast.Assign):
            return [t.id for t in node.targets if isinstance(t, ast.Name)]
        return []

    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            members = set()
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    members.add(item.name)
                members.update(targets(item))
            found[node.name] = {m for m in members if not m.startswith("_")}
        elif isinstance(node, ast.FunctionDef):
            found[node.name] = set()
        else:
            is_typevar = (
                isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Call)
                and getattr(node.value.func, "id", "") == "TypeVar"
            )
            for name in targets(node):
                if not is_typevar:
                    found[name] = set()
    return {name: members for name, members in found.items() if not name.startswith("_")}


def test_the_reference_names_every_part_of_the_provider_api() -> None:
    doc = text()
    reference = doc[doc.index("## The provider API reference") :]
    missing = []
    for name, members in sorted(api_names().items()):
        if f"`{name}" not in doc:
            missing.append(name)
        missing += [f"{name}.{m}" for m in sorted(members) if f"`{m}" not in reference]
    missing += [hook for hook in OPTIONAL_HOOKS if f"`{hook}" not in reference]
    assert missing == [], "docs/providers.md does not name these parts of the provider API"


def test_the_api_reading_sees_the_hooks() -> None:
    """The check's own check: it finds hooks of each kind, fields and constants."""
    names = api_names()
    assert {"send", "send_batch", "sender_addresses"} <= names["TransportProvider"]
    assert {"logon", "status_props", "validate_state"} <= names["Provider"]
    assert {"run_blocking", "state_dir", "provider_uid"} <= names["ProviderSupport"]
    assert {"refused", "response"} == names["SendResult"]
    assert {"SECRET_KEYS", "REMOTE_PROGRESS_IDLE", "schema_problems", "Row"} <= set(names)
    assert "T" not in names


def test_the_doc_points_only_inside_the_repository() -> None:
    doc = text()
    assert "../shared" not in doc and "shared/" not in doc
    headings = {
        re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", doc, re.M)
    }
    for target in re.findall(r"\]\(([^)]+)\)", doc):
        assert not target.startswith(("http:", "https:")), target
        path, _, anchor = target.partition("#")
        if path:
            assert (DOC.parent / path).exists(), f"a link to {path}, which is not there"
        elif anchor:
            assert anchor in headings, f"a link to #{anchor}, which is no heading"
    for cited in re.findall(r"\b((?:docs|mapid|tests)/[\w./-]+\.(?:md|py))\b", doc):
        assert (ROOT / cited).exists(), f"the doc cites {cited}, which is not there"


def test_the_readme_and_the_architecture_link_here() -> None:
    assert "docs/providers.md" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert "providers.md" in (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
