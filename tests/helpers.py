"""Helpers shared by the test modules (``from helpers import ...``: pytest puts tests/ on
the path)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from click.testing import CliRunner

from faceclean.cli import main


def run(*args):
    """``faceclean ARGS`` in-process (arguments may be paths); click's Result."""
    return CliRunner().invoke(main, [str(a) for a in args])


def one_error_line(result, *needles) -> str:
    """Exit 2, no traceback, and one ``error:`` line holding every needle; that line."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.lower().startswith("error")]
    assert len(lines) == 1, result.output
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@contextmanager
def lock_held(out: Path, seconds: float = 60.0) -> Iterator[subprocess.Popen]:
    """Another process holding ``faceclean.outputs.output_lock(out)`` for ``seconds``:
    yields it once it holds the lock, kills it on the way out."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
                import time
                from faceclean.outputs import output_lock
                with output_lock({str(out)!r}):
                    print("locked", flush=True)
                    time.sleep({seconds})
            """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def tiny_store(path):
    """A small real embedding store: search reads the training store's rows before any
    trial (a store cleaning would refuse fails in one line first), even with faked trials."""
    from faceclean.data.synthetic import clustered_embeddings, write_embedding_store

    x, y = clustered_embeddings(6, 4, 16, seed=0)
    return write_embedding_store(path, x, y)
