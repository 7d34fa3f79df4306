"""docs/protocol.md is the wire protocol's reference: it documents exactly what the daemon serves.

The rules this file keeps:

- Every op is documented under a level-4 heading that is its name in backticks and nothing
  else ("#### `session.open_entry`"). The set of those headings is the set of ops the
  daemon registers (read from the real registry, never from a list written here), both
  ways; and nowhere does the document name, in backticks or as an example's `"op"`, an op
  the daemon does not serve.
- The document has sections 1 to 10 and the subsections that code, tests and docs cite,
  and every "docs/protocol.md N.N" citation and every link to one of its headings anywhere
  in the repository finds what it names.
- Nothing in the repository points outside it: no path into the shared directory beside the
  checkout, no citation of the shared protocol text, whose place docs/protocol.md took, and
  none of the design text or the reference notes beside it, whose places docs/design.md and
  docs/mapi.md took.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import mapid.daemon.ops  # noqa: F401  (importing the package registers every op)
from mapid.client import Client
from mapid.daemon.bus.registry import REGISTRY

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "protocol.md"

OP_HEADING = re.compile(r"^#### `([a-z_]+\.[a-z_]+)`$", re.MULTILINE)
"""The heading that documents an op: its name in backticks, alone on a level-4 heading."""
ANY_OP_HEADING = re.compile(r"^####\s+`[^`]*`\s*$", re.MULTILINE)
BACKTICKED = re.compile(r"`([a-z_]+)\.([a-z_]+)`")
JSON_BLOCK = re.compile(r"^```json\n(.*?)^```", re.MULTILINE | re.DOTALL)
EXAMPLE_OP = re.compile(r'"op":\s*"([^"]*)"')
"""The op of an example request, in the ```json blocks (a restriction's "op" is not one)."""
SECTION = re.compile(r"^## (\d+)\. ", re.MULTILINE)
SUBSECTION = re.compile(r"^### (\d+\.\d+) ", re.MULTILINE)

CITED_SUBSECTIONS = [*(f"3.{n}" for n in range(1, 7)), *(f"6.{n}" for n in range(1, 7))]
CITED_SUBSECTIONS += [*(f"7.{n}" for n in range(1, 5)), "4.1", "10.1", "10.2"]
"""Subsections the repository cites or the document promises (6.1 to 6.6 and 7.1 to 7.4
keep the numbers of the protocol's first text)."""

CITATION = re.compile(
    r"docs/protocol\.md(?:'s)?[ \t]+(?:sections?[ \t]+)?"
    r"(?P<numbers>\d+(?:\.\d+)*(?:(?:,[ \t]*|[ \t]+and[ \t]+|[ \t]+to[ \t]+)\d+(?:\.\d+)*)*)"
)
NUMBER = re.compile(r"\d+(?:\.\d+)*")
HEADING = re.compile(r"^#{1,6} (.+?)\s*$", re.MULTILINE)
ANCHOR_LINK = re.compile(r"\bprotocol\.md#([\w-]+)")

# The patterns below are written so that this file does not match them itself.
OUTSIDE_PATHS = re.compile(r"\.\./shared/|\bshared/(?:PROTOCOL|DESIGN|reference)\b")
"""A path into the shared directory beside the checkout (a bare mention of the directory's
name, as in another test's check that a page does not link there, is not a path)."""
SHARED_PROTOCOL = re.compile(r"(?<![\w/.-])PROTOCOL(?:\.md\b|[ \t]+(?:section[ \t]+|§[ \t]*)?\d)")
"""A citation of the shared protocol text: its name with ".md", or its bare name followed by a
section number (with "section" or "§" between or not); identifiers such as PROTOCOL_VERSION
or ssl's PROTOCOL_TLS_CLIENT are not citations."""
SHARED_DESIGN = re.compile(
    r"(?<![\w/.-])DESIGN\.md\b"
    r"|(?<![\w-])(?:reference/)?(?:mapi[-]digest|bus[-]anchors|providers[-]anchors|layout[-]review)"
    r"(?:\.md)?\b"
)
"""A citation of the shared design text or of the reference notes beside it."""

SKIP_DIRS = {"__pycache__", "node_modules", "build", "dist", "htmlcov"}
"""Directories that hold no sources (besides hidden ones and virtual environments)."""
KEEP_HIDDEN = {".ci", ".github"}
TEXT_SUFFIXES = {
    "",
    ".cfg",
    ".conf",
    ".ini",
    ".json",
    ".md",
    ".py",
    ".rst",
    ".service",
    ".sh",
    ".svg",
    ".toml",
    ".txt",
    ".yaml",
    ".yml",
}
MAX_BYTES = 2 * 1024 * 1024


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def documented_ops(text: str) -> list[str]:
    return OP_HEADING.findall(text)


def served_ops() -> set[str]:
    return set(REGISTRY.names())


def repository_files() -> Iterator[Path]:
    """Every text file of the checkout: sources, tests, docs, benchmarks, units, scripts."""

    def walk(directory: Path) -> Iterator[Path]:
        for path in sorted(directory.iterdir()):
            name = path.name
            if path.is_dir():
                hidden = name.startswith(".") and name not in KEEP_HIDDEN
                if hidden or name in SKIP_DIRS or name.endswith(".egg-info"):
                    continue
                if name.startswith("venv") or (path / "pyvenv.cfg").exists():
                    continue
                yield from walk(path)
            elif (
                path.is_file()
                and path.suffix in TEXT_SUFFIXES
                and not name.startswith(".")
                and path.stat().st_size <= MAX_BYTES
            ):
                yield path

    yield from walk(ROOT)


def matches(pattern: re.Pattern[str]) -> list[str]:
    """`file:line: text` of every line of the repository that `pattern` matches."""
    found = []
    for path in repository_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if pattern.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    return found


def test_every_served_op_is_documented_and_every_documented_op_is_served() -> None:
    documented = documented_ops(doc_text())
    served = served_ops()
    assert len(served) > 40, "the registry looks empty: did importing mapid.daemon.ops fail?"
    repeated = sorted({name for name in documented if documented.count(name) > 1})
    assert not repeated, f"docs/protocol.md documents these ops twice: {repeated}"
    missing = sorted(served - set(documented))
    assert not missing, (
        f"the daemon serves ops docs/protocol.md does not document: {missing}; add a "
        "'#### `op.name`' entry for each (token, arguments, result, errors) in section 6"
    )
    unserved = sorted(set(documented) - served)
    assert not unserved, (
        f"docs/protocol.md documents ops the daemon does not serve: {unserved}; remove "
        "them, or register them (mapid/daemon/ops)"
    )


def test_op_headings_are_spelled_as_the_rule_says() -> None:
    """A level-4 heading in backticks that is not an op name is a typo in one."""
    text = doc_text()
    loose = [h for h in ANY_OP_HEADING.findall(text) if not OP_HEADING.fullmatch(h.strip())]
    assert not loose, f"headings that look like ops but do not parse as one: {loose}"


def test_the_document_names_no_op_the_daemon_does_not_serve() -> None:
    """In prose, tables and examples: a backticked `family.name` of an op family (`session`,
    `folder` …) and every example request's "op" must be a served op."""
    text = doc_text()
    served = served_ops()
    families = {name.split(".", 1)[0] for name in served}
    named = {f"{family}.{name}" for family, name in BACKTICKED.findall(text) if family in families}
    for block in JSON_BLOCK.findall(text):
        named |= set(EXAMPLE_OP.findall(block))
    unknown = sorted(named - served)
    assert not unknown, f"docs/protocol.md names ops the daemon does not serve: {unknown}"


def test_the_daemon_announces_what_the_document_lists(client: Client) -> None:
    """A running daemon's `daemon.hello` capabilities: the documented ops and the feature
    names of section 10.1, no more and no fewer."""
    text = doc_text()
    section = text.split("### 10.1 ", 1)[1].split("\n### ", 1)[0]
    features = set(re.findall(r"^\| `([a-z_.]+)` \|", section, re.MULTILINE))
    assert features, "section 10.1 lists no capabilities"
    announced = set(client.daemon_hello()["capabilities"])
    expected = set(documented_ops(text)) | features
    assert announced == expected, (
        f"announced but not documented: {sorted(announced - expected)}; "
        f"documented but not announced: {sorted(expected - announced)}"
    )


def test_the_document_has_sections_1_to_10_and_the_cited_subsections() -> None:
    text = doc_text()
    sections = [int(n) for n in SECTION.findall(text)]
    assert sections == list(range(1, 11)), f"sections of docs/protocol.md: {sections}"
    subsections = SUBSECTION.findall(text)
    missing = [s for s in CITED_SUBSECTIONS if s not in subsections]
    assert not missing, f"docs/protocol.md lacks the subsections {missing}"
    for sub in subsections:  # each under its own section, in order
        assert int(sub.split(".")[0]) in sections, sub
    assert subsections == sorted(subsections, key=lambda s: tuple(map(int, s.split(".")))), (
        f"subsections out of order: {subsections}"
    )


def test_every_citation_of_the_document_names_a_section_it_has() -> None:
    text = doc_text()
    existing = set(SECTION.findall(text)) | set(SUBSECTION.findall(text))
    broken = []
    for path in repository_files():
        try:
            source = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for citation in CITATION.finditer(source):
            for number in NUMBER.findall(citation["numbers"]):
                if number not in existing:
                    line = source.count("\n", 0, citation.start()) + 1
                    broken.append(f"{path.relative_to(ROOT)}:{line}: {citation[0]!r}")
    assert not broken, "citations of sections docs/protocol.md does not have:\n" + "\n".join(broken)


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation but `-` and `_` dropped,
    spaces made `-`."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def test_every_link_to_a_heading_of_the_document_finds_it() -> None:
    anchors = {slug(h) for h in HEADING.findall(doc_text())}
    broken = []
    for path in repository_files():
        try:
            source = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for link in ANCHOR_LINK.finditer(source):
            if link[1] not in anchors:
                line = source.count("\n", 0, link.start()) + 1
                broken.append(f"{path.relative_to(ROOT)}:{line}: #{link[1]}")
    assert not broken, "links to headings docs/protocol.md does not have:\n" + "\n".join(broken)


def test_nothing_points_outside_the_repository() -> None:
    """No path into the shared directory, and every citation of the protocol's text is a
    citation of docs/protocol.md (the old citations were rewritten when it took the shared
    text's place, keeping their section numbers)."""
    found = matches(OUTSIDE_PATHS) + matches(SHARED_PROTOCOL)
    assert not found, (
        "these lines point outside the repository; cite docs/protocol.md by section "
        "instead:\n" + "\n".join(found)
    )


def test_no_citation_of_the_design_text_or_the_reference_notes() -> None:
    found = matches(SHARED_DESIGN)
    assert not found, "these lines cite documents outside the repository:\n" + "\n".join(found[:40])
