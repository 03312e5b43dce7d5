"""Refill the `faceclean VERB --help` blocks of docs/*.md from the code: run after changing
an option. `tests/test_docs.py` fails while a block differs from the code."""

from pathlib import Path

from faceclean.cli.help_text import update_docs

if __name__ == "__main__":
    for path in update_docs(Path(__file__).parent):
        print(f"updated {path}")
