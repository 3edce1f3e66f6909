"""Every document the project cites is in the repository, with the section cited.

Citations take two forms: ``docs/<file>.md section N`` (a heading ``N. Title`` at any level) and
``docs/<file>.md#anchor`` (a heading whose GitHub anchor is ``anchor``). A citation of the external
reference document the project started from is refused outright: its facts live in docs/reference.md.
Scanned: so8t/, suites/, benchmarks/, conftest.py, README.md, docs/.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("so8t", "suites", "benchmarks", "conftest.py", "README.md", "docs")

CITATION = re.compile(r"docs/([\w./-]+?\.md)(?:#([\w-]+)|[\s#*>]+sections?\s+(\d+))?")
#: Spelled in two pieces so this file does not cite it itself.
EXTERNAL = re.compile("REFER" + r"ENCE(?:\.md|\s+section)|/work/" + "shared")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.MULTILINE)


def anchor(title: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def headings(doc: Path) -> tuple[set[str], set[str]]:
    """(section numbers, anchors) of a Markdown file's headings."""
    titles = HEADING.findall(doc.read_text(encoding="utf-8"))
    numbers = {m.group(1) for m in (re.match(r"(\d+)\.\s", t) for t in titles) if m}
    return numbers, {anchor(t) for t in titles}


def citation_problems(text: str, root: Path) -> list[str]:
    """One line per bad citation in ``text``: a missing document, section or anchor, or an external doc."""
    problems = [f"cites the external document ({m.group(0)!r})" for m in EXTERNAL.finditer(text)]
    for m in CITATION.finditer(text):
        name, frag, section = m.groups()
        doc = root / "docs" / name
        if not doc.is_file():
            problems.append(f"cites docs/{name}, which does not exist")
            continue
        numbers, anchors = headings(doc)
        if section is not None and section not in numbers:
            problems.append(f"cites docs/{name} section {section}, which has no such section")
        if frag is not None and frag not in anchors:
            problems.append(f"cites docs/{name}#{frag}, which has no such heading")
    return problems


def scanned_files(root: Path) -> list[Path]:
    out = []
    for entry in SCANNED:
        path = root / entry
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        out += [p for p in candidates if "__pycache__" not in p.parts and p.suffix != ".pyc"]
    return out


def test_every_citation_names_an_existing_document_and_section():
    problems = []
    for path in scanned_files(ROOT):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary fixture data cites nothing
        for number, line in enumerate(text.splitlines(keepends=True), 1):
            problems += [f"{path.relative_to(ROOT)}:{number}: {p}" for p in citation_problems(line, ROOT)]
        # a citation wrapped over two lines (file name, then "section N") is checked on the whole text too
        wrapped = {p for p in citation_problems(text, ROOT)} - {p.split(": ", 1)[1] for p in problems}
        problems += [f"{path.relative_to(ROOT)}: {p}" for p in sorted(wrapped)]
    assert not problems, "\n".join(problems)


def test_the_scan_covers_the_code_and_the_reference_cites_itself_correctly():
    files = {p.relative_to(ROOT).as_posix() for p in scanned_files(ROOT)}
    assert {"so8t/group.py", "conftest.py", "README.md", "docs/reference.md"} <= files
    numbers, _ = headings(ROOT / "docs" / "reference.md")
    assert numbers == {str(n) for n in range(1, 17)}


#: The docs folder, spelled so the examples below are not citations of this file.
DOCS = "docs" + "/"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (f"see {DOCS}nowhere.md section 1", "nowhere.md, which does not exist"),
        (f"see {DOCS}reference.md section 42", "section 42, which has no such section"),
        (f"see {DOCS}reference.md\n    # section 77 for more", "section 77, which has no such section"),
        (f"see {DOCS}reference.md#no-such-heading", "#no-such-heading, which has no such heading"),
        ("(" + "REFER" + "ENCE section 5)", "external document"),
        ("from /work/" + "shared/notes", "external document"),
    ],
)
def test_a_bad_citation_is_reported(text, fragment):
    problems = citation_problems(text, ROOT)
    assert len(problems) == 1 and fragment in problems[0], problems


def test_good_citations_pass():
    text = (
        "docs/reference.md section 5; docs/reference.md#5-llamacpp-through-llama-cpp-python; "
        "docs/benchmarks.md"
    )
    assert citation_problems(text, ROOT) == []
