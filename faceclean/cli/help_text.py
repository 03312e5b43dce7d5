"""Each verb's ``--help`` as plain text, and the docs/ blocks that must equal it.

Every file in ``docs/`` carries, for each verb it documents, a block between
``<!-- help:VERB -->`` and ``<!-- /help:VERB -->`` holding ``faceclean VERB --help``.
``python docs/update_help.py`` rewrites the blocks; a test fails when one differs from the
code, so the reference cannot drift from the options.
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from faceclean.cli.common import main

WIDTH = 100  # fixed, so the text does not depend on the terminal that renders it


def verb_help(verb: str) -> str:
    """``faceclean VERB --help`` as it prints at :data:`WIDTH` columns."""
    command = main.commands[verb]
    # As `faceclean VERB --help` builds them: the group's context settings (-h, --help) are
    # inherited, so the text does not depend on which context first made the help option.
    settings = {**main.context_settings, "terminal_width": WIDTH, "max_content_width": WIDTH}
    parent = click.Context(main, info_name="faceclean", **settings)
    ctx = click.Context(command, parent=parent, info_name=verb, **settings)
    return command.get_help(ctx).rstrip() + "\n"


_BLOCK = re.compile(r"(<!-- help:([a-z-]+) -->\n)(.*?)(<!-- /help:\2 -->)", re.S)


def render_blocks(text: str) -> str:
    """``text`` with every help block filled with the current ``--help`` of its verb."""
    return _BLOCK.sub(
        lambda m: f"{m.group(1)}```text\n{verb_help(m.group(2))}```\n{m.group(4)}", text
    )


def documented_verbs(text: str) -> list[str]:
    """The verbs whose help blocks ``text`` holds."""
    return [m.group(2) for m in _BLOCK.finditer(text)]


def update_docs(folder: str | Path) -> list[Path]:
    """Rewrite the help blocks of every ``*.md`` in ``folder``; returns the files changed."""
    changed = []
    for path in sorted(Path(folder).glob("*.md")):
        old = path.read_text()
        new = render_blocks(old)
        if new != old:
            path.write_text(new)
            changed.append(path)
    return changed
