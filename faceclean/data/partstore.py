"""The resumable chunk store behind ``faceclean extract``.

Each finished chunk of rows is written atomically to ``<output>.partial/part-NNNNNN.parquet``
with its failures in the file metadata; ``manifest.json`` records what the chunks were made
from, so a run with other settings or data starts afresh. ``finish`` joins the chunks into
the output (under a temporary name, renamed when complete) and removes the folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from faceclean.data.store import atomic_path

PART_KEY = b"faceclean.part"


class PartStore:
    """Finished chunks: files in ``<output>.partial/`` (resumable), or a dict in memory."""

    def __init__(self, output: Path | None, schema: pa.Schema, fingerprint: dict):
        self.output, self.schema = output, schema
        self.memory: dict[int, pa.Table] = {}
        fingerprint = json.loads(json.dumps(fingerprint))  # tuples become lists, as on disk
        if output is None:
            return
        self.dir = output.with_name(output.name + ".partial")
        manifest = self.dir / "manifest.json"
        if self.dir.exists():
            try:
                same = json.loads(manifest.read_text()) == fingerprint
            except (OSError, ValueError):
                same = False
            if not same:  # made with other settings or data: none of it can be reused
                shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        if not manifest.exists():
            with atomic_path(manifest) as tmp:
                tmp.write_text(json.dumps(fingerprint))

    def _part(self, c: int) -> Path:
        return self.dir / f"part-{c:06d}.parquet"

    def finished_chunks(self, n_chunks: int) -> set[int]:
        if self.output is None:
            return set()
        return {c for c in range(n_chunks) if self._part(c).exists()}

    def write_chunk(self, c: int, table: pa.Table) -> None:
        if self.output is None:
            self.memory[c] = table
            return
        with atomic_path(self._part(c)) as tmp:
            pq.write_table(table, tmp)

    def failures_in(self, chunks) -> list[tuple]:
        """The failures recorded in finished ``chunks`` (reads only their metadata)."""
        out: list[tuple] = []
        for c in chunks:
            if self.output is None:
                meta = self.memory[c].schema.metadata
            else:
                meta = pq.read_schema(self._part(c)).metadata
            out += [tuple(f) for f in json.loads(meta[PART_KEY])["failures"]]
        return out

    def discard(self) -> None:
        """Remove every finished chunk (a run that failed as a whole leaves nothing)."""
        self.memory.clear()
        if self.output is not None:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _tables(self, n_chunks: int):
        for c in range(n_chunks):
            yield self.memory[c] if self.output is None else pq.read_table(self._part(c))

    def finish(self, n_chunks: int, failures_path: Path | None, extra_failures=()):
        """Join the chunks in order. Returns (in-memory table or None, stats).

        ``extra_failures`` (``(path, label, message)``, e.g. unreadable identity folders) are
        listed first in the failures."""
        stats = {"written": 0, "resized": 0, "failures": list(extra_failures)}
        stats["failures_path"] = None
        tables = []

        def chunks():
            for table in self._tables(n_chunks):
                part = json.loads(table.schema.metadata[PART_KEY])
                stats["failures"] += [tuple(f) for f in part["failures"]]
                stats["resized"] += part["resized"]
                stats["written"] += table.num_rows
                yield table.replace_schema_metadata(self.schema.metadata)

        if self.output is None:
            tables = list(chunks())
            return (pa.concat_tables(tables) if tables else self.schema.empty_table()), stats
        with atomic_path(self.output) as tmp:
            with pq.ParquetWriter(tmp, self.schema) as writer:
                for table in chunks():
                    writer.write_table(table, row_group_size=max(1, table.num_rows))
            if stats["failures"]:
                with atomic_path(failures_path) as ftmp, open(ftmp, "w") as f:
                    f.write("path\tlabel\terror\n")
                    f.writelines(f"{p}\t{lab}\t{msg}\n" for p, lab, msg in stats["failures"])
                stats["failures_path"] = failures_path
            else:
                failures_path.unlink(missing_ok=True)
        shutil.rmtree(self.dir)
        return None, stats
