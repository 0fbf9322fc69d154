"""The README is a front door and the manual lives in docs/: both must stay navigable.

- README.md stays under 250 lines and names the two commands;
- every relative link in README.md and docs/*.md resolves to an existing file, and a
  ``#anchor`` into a Markdown file (or within the same file) to one of its headings, with
  GitHub's anchor rules;
- every path in the README's path tables (``| path | holds |``) exists.

Plain text checks: no server, no network.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
MAX_README_LINES = 250

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
INLINE_CODE = re.compile(r"(`+)(?:.+?)\1")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^()\s<>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    lines, fence = [], None
    for number, line in enumerate(text.splitlines(), start=1):
        opening = FENCE.match(line)
        if fence is None and opening:
            fence = opening.group(1)[0] * 3
            continue
        if fence is not None:
            if line.strip().startswith(fence):
                fence = None
            continue
        lines.append((number, line))
    return lines


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lower-cased, punctuation dropped,
    each space a hyphen."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("`", "")
    text = re.sub(r"(\*+|(?<!\w)_+|_+(?!\w))", "", text)  # emphasis markers
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def links(path: Path) -> list[tuple[int, str]]:
    found = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        for match in LINK.finditer(INLINE_CODE.sub("``", line)):
            found.append((number, match.group(1)))
    return found


def test_readme_is_a_short_front_door():
    text = README.read_text(encoding="utf-8")
    count = len(text.splitlines())
    assert count < MAX_README_LINES, f"README.md has {count} lines; move detail into docs/ (limit {MAX_README_LINES})"
    assert "make test" in text and "make run" in text


@pytest.mark.parametrize("document", [README, *DOCS], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(document: Path):
    broken = []
    for number, target in links(document):
        if SCHEME.match(target) or target.startswith("//"):
            continue  # http(s), mailto: not checked here (no network)
        location, _, anchor = target.partition("#")
        resolved = (document.parent / unquote(location)).resolve() if location else document
        where = f"{document.relative_to(ROOT)}:{number}: {target}"
        if not resolved.exists():
            broken.append(f"{where}: no such file {resolved.relative_to(ROOT) if resolved.is_relative_to(ROOT) else resolved}")
            continue
        if anchor and resolved.suffix == ".md" and unquote(anchor).lower() not in anchors(resolved):
            broken.append(f"{where}: no heading with the anchor #{anchor} in {resolved.relative_to(ROOT)}")
    assert not broken, "broken links:\n" + "\n".join(broken)


def path_table_entries(text: str) -> list[str]:
    """The backticked names in the first column of every ``| path | holds |`` table."""
    entries: list[str] = []
    in_table = False
    for _, line in prose_lines(text):
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")] if line.lstrip().startswith("|") else []
        if not cells:
            in_table = False
        elif cells[:2] == ["path", "holds"]:
            in_table = True
        elif in_table and not set(cells[0]) <= set("-: "):
            entries.extend(re.findall(r"`([^`]+)`", cells[0]))
    return entries


def test_every_path_in_the_readme_path_table_exists():
    entries = path_table_entries(README.read_text(encoding="utf-8"))
    assert len(entries) >= 10, f"README.md should map the repository in a `| path | holds |` table; found {entries}"
    missing = [entry for entry in entries if not (ROOT / entry).exists()]
    assert not missing, f"paths in README.md's path table that do not exist: {missing}"


def test_the_anchor_rules_match_github():
    assert github_slug("Operator's view in Temporal UI") == "operators-view-in-temporal-ui"
    assert github_slug("Routing: kinds, departments, availability, rotations") == (
        "routing-kinds-departments-availability-rotations")
    assert github_slug("`escalations replay` and *repair*") == "escalations-replay-and-repair"
    assert github_slug("Events, read model and exactly-once") == "events-read-model-and-exactly-once"
    assert github_slug("snake_case names") == "snake_case-names"
