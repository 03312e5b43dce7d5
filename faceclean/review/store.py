"""The decisions of one clean folder as `faceclean review` changes them, one click at a
time; the file's contract is :mod:`faceclean.cleaning.review_file`."""

from __future__ import annotations

import datetime as dt
import os
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from faceclean.cleaning.review_file import DECISIONS, REVIEW_FILE, SCHEMA, read_review
from faceclean.data.store import atomic_path

__all__ = ["REVIEW_FILE", "ReviewStore", "read_review"]


class ReviewStore:
    """The decisions of one clean folder, in memory and on disk, changed one at a time.

    Thread-safe: the server's request threads share one store."""

    def __init__(self, clean_dir: str | Path):
        self.path = Path(clean_dir) / REVIEW_FILE
        self._lock = threading.Lock()
        self.rows: dict[str, dict] = {r["key"]: r for r in read_review(self.path).to_pylist()}

    def decision(self, key: str) -> str | None:
        row = self.rows.get(key)
        return row["decision"] if row else None

    def set(self, key: str, kind: str, decision: str | None, shown: dict) -> None:
        """Record (or with ``decision`` None, clear) the decision on ``key`` and save.

        ``shown`` holds the item's columns as the person saw them (see the module doc)."""
        if decision is not None and decision not in DECISIONS.get(kind, ()):
            raise ValueError(f"{decision!r} is not a decision for {kind}")
        with self._lock:
            rows = dict(self.rows)  # changed only once saved: a failed save changes nothing
            if decision is None:
                rows.pop(key, None)
            else:
                row = {n: shown.get(n) for n in SCHEMA.names}
                row |= {"key": key, "kind": kind, "decision": decision}
                row["time"] = dt.datetime.now(dt.timezone.utc)
                rows[key] = row
            self._save(rows)
            self.rows = rows

    def _save(self, rows: dict) -> None:
        table = pa.Table.from_pylist(list(rows.values()), schema=SCHEMA)
        with atomic_path(self.path) as tmp:
            pq.write_table(table, tmp)
            fd = os.open(tmp, os.O_RDONLY)  # on disk before the rename: a power cut too
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
