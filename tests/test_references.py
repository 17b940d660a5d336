"""Citations point inside the repository (issue 30).

Code, tests, sweep files and docs justify constants by citing the upstream facts they follow. Those
facts live in ``docs/references/`` (``lamo.md``, ``odt_td3.md``, ``l2m.md``, ``environment.md``), each
entry written from the upstream code with its repository, commit, file and lines. A citation reads
``docs/references/lamo.md "Evaluation"`` (several sections: ``docs/references/lamo.md "Model", "Data"``).

- No file cites the notes that used to live outside the repository (the shared reference and facts
  files, or anything under the parent directory's ``shared`` folder): a clone could not audit them.
- Every ``docs/references/<name>.md "<Section>"`` citation names an existing file whose headings
  include that section, so renaming a heading without its citations fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REFERENCES = REPO / "docs" / "references"
SCANNED = ("lamo_ray", "tests", "benchmarks", "sweeps", "docs", "README.md", "pyproject.toml")
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".sh", ".cfg", ".ini", ".json"}

# the notes outside the repository, by every spelling the tree has used (built from pieces so that
# this file does not match itself)
_OUTSIDE = "|".join([
    r"REFERENCE(?:_ODT_TD3|_L2M)?\.md",
    "FACTS" + r"\.md",
    r"\.\./" + "shared",
    r"\b" + "FACTS" + r"\b",
    r"\b" + "REFERENCE" + r'\b\s+\\?"',
])
OUTSIDE = re.compile(_OUTSIDE)
# docs/references/<name>.md followed by one or more quoted sections, separated by commas, slashes or "and"
CITATION = re.compile(r'docs/references/([\w-]+)\.md((?:\s*(?:,|/|and)?\s*\\?"[^"\\\n]+\\?")+)')
SECTION = re.compile(r'\\?"([^"\\\n]+)\\?"')
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def scanned_files() -> list[Path]:
    files = []
    for name in SCANNED:
        path = REPO / name
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += [p for p in sorted(path.rglob("*"))
                      if p.is_file() and p.suffix in SUFFIXES and "__pycache__" not in p.parts]
    return files


def headings(name: str) -> set[str]:
    return set(HEADING.findall((REFERENCES / f"{name}.md").read_text(encoding="utf-8")))


def citations() -> list[tuple[Path, int, str, str]]:
    """(file, line, reference file name, section) for every citation in the scanned tree."""
    found = []
    for path in scanned_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for match in CITATION.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            for section in SECTION.findall(match.group(2)):
                found.append((path, line, match.group(1), section))
    return found


def test_the_reference_files_exist_with_sections():
    for name in ("lamo", "odt_td3", "l2m", "environment"):
        assert (REFERENCES / f"{name}.md").is_file(), f"docs/references/{name}.md is missing"
        assert len(headings(name)) >= 3, f"docs/references/{name}.md has too few sections"


def test_nothing_cites_notes_outside_the_repository():
    me = Path(__file__).resolve()
    offenders = []
    for path in scanned_files():
        if path.resolve() == me:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, ("cite docs/references/<file>.md \"<Section>\" instead of notes outside the "
                           "repository:\n" + "\n".join(offenders))


def test_every_citation_names_an_existing_section():
    found = citations()
    assert len(found) > 50, f"only {len(found)} citations found: is the pattern still right?"
    known: dict[str, set[str] | None] = {}
    broken = []
    for path, line, name, section in found:
        if name not in known:
            known[name] = headings(name) if (REFERENCES / f"{name}.md").is_file() else None
        if known[name] is None:
            broken.append(f"{path.relative_to(REPO)}:{line}: docs/references/{name}.md does not exist")
        elif section not in known[name]:
            broken.append(f"{path.relative_to(REPO)}:{line}: docs/references/{name}.md has no section "
                          f"\"{section}\" (sections: {', '.join(sorted(known[name]))})")
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("text, expected", [
    ('see docs/references/lamo.md "Model", "Data" and', [("lamo", "Model"), ("lamo", "Data")]),
    ('(docs/references/l2m.md "The modulation pool"; x)', [("l2m", "The modulation pool")]),
    ('"protocol, docs/references/lamo.md \\"Evaluation\\": mean"', [("lamo", "Evaluation")]),
    ('docs/references/odt_td3.md "Online loop" / "Rewards"', [("odt_td3", "Online loop"), ("odt_td3", "Rewards")]),
])
def test_the_citation_pattern(text, expected):
    got = [(m.group(1), s) for m in CITATION.finditer(text) for s in SECTION.findall(m.group(2))]
    assert got == expected
