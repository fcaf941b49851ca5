"""The documentation holds together: every relative link of README.md and docs/*.md leads to a
file of the repository (and to a heading, when it names one), and CI runs the README's test
command verbatim."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to '-'."""
    out = set()
    for line in page.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", title)))
    return out


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


def test_the_anchor_reader_follows_github():
    probe = ROOT / "README.md"
    assert "extending-it" in anchors(probe)
    assert "quick-start" in anchors(probe)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists() or ROOT not in dest.parents and dest != ROOT:
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(target)
    assert broken == []


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = "./setup.sh && FAIRSYNTH_DATA_DIR=../shared/data .venv/bin/pytest"
    assert command in readme
    assert command in ci


#: A section named in code, ``docs/<page>.md, 'Title'`` (or in double quotes), across lines.
SECTION = re.compile(r"docs/([\w-]+\.md), (?:'([^']+)'|\"([^\"]+)\")")


def test_sections_named_in_code_exist():
    """A message or comment that sends the reader to a section of a page names one that is
    there, so that moving a section between pages cannot leave a stale pointer behind."""
    missing = []
    for path in sorted(ROOT.glob("*/**/*.py")):
        if ".venv" in path.parts:
            continue
        text = re.sub(r"[\"']\s*\n\s*(?:#:?\s*)?[\"']", "", path.read_text())  # join strings
        text = re.sub(r"\n\s*(?:#:?|\"\"\")?\s*", " ", text)
        for page, single, double in SECTION.findall(text):
            title = " ".join((single or double).split())
            dest = ROOT / "docs" / page
            headings = ({line.lstrip("#").strip() for line in dest.read_text().splitlines()
                         if line.startswith("#")} if dest.exists() else set())
            if title not in headings:
                missing.append(f"{path.relative_to(ROOT)}: {page}, {title!r}")
    assert missing == []
