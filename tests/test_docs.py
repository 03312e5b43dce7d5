"""docs/ cannot drift from the code: every verb is documented in one docs/ file whose help
block equals `faceclean VERB --help`, and the README links every docs/ file."""

from __future__ import annotations

from pathlib import Path

from faceclean.cli import main
from faceclean.cli.help_text import documented_verbs, render_blocks

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def test_every_verb_has_exactly_one_reference_block():
    seen: dict[str, str] = {}
    for path in DOCS.glob("*.md"):
        for verb in documented_verbs(path.read_text()):
            assert verb not in seen, f"{verb} documented in {seen[verb]} and {path.name}"
            seen[verb] = path.name
    assert set(seen) == set(main.commands), set(main.commands) ^ set(seen)


def test_reference_blocks_equal_the_help_of_the_code():
    for path in DOCS.glob("*.md"):
        text = path.read_text()
        assert render_blocks(text) == text, (
            f"docs/{path.name} differs from the options in the code: "
            "run `python docs/update_help.py`"
        )


def test_readme_links_every_doc_and_stays_short():
    readme = (ROOT / "README.md").read_text()
    for path in DOCS.glob("*.md"):
        assert f"docs/{path.name}" in readme, f"README does not link docs/{path.name}"
    assert len(readme.splitlines()) <= 200
