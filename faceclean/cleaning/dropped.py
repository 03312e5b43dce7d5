"""The rows the filter dropped, spilled to disk, so that the kept sums need no second array.

The filter's scoring reads the class sums S (x . S_y for the leave-one-out cosine) while it
decides which rows to drop. Holding the kept sums beside them (as 0.2 did) costs one more
float32 K x d array: 4.1 GB at WebFace42M's 2M classes x 512-d. Instead the dropped rows
(a few percent of a real set) go to a temporary float32 file, and after the pass they are
subtracted from S in place, batch by batch in the order the running subtraction used: the
same float32 operations on the same values, so the kept sums are the same bits.
"""

from __future__ import annotations

import tempfile
import weakref
from pathlib import Path

import numpy as np

from faceclean.cleaning.store_sums import add_rows


class DroppedRows:
    """Dropped (labels, unit rows) per batch: labels in memory (8 bytes a row), rows in a
    temporary file in ``spill_dir`` (None: the system's temporary folder), deleted on
    :meth:`close` / leaving the ``with`` block."""

    def __init__(self, spill_dir: str | Path | None = None):
        self.spill_dir = spill_dir
        self.file = None
        self.labels: list[np.ndarray] = []
        self.dim = 0

    def add(self, labels: np.ndarray, rows: np.ndarray) -> None:
        """One batch's dropped rows (float32 [n, d]) and their labels."""
        if self.file is None:
            self.file = tempfile.NamedTemporaryFile(
                dir=self.spill_dir, prefix=".dropped-", suffix=".f32", delete=False
            )
            self._cleanup = weakref.finalize(self, _remove, self.file)
            self.dim = rows.shape[1]
        self.file.write(np.ascontiguousarray(rows, np.float32).tobytes())
        self.labels.append(np.asarray(labels, np.int64))

    def subtract_from(self, sums: np.ndarray) -> None:
        """sums[label] -= row for every dropped row, in place, one batch at a time as
        :func:`~faceclean.cleaning.store_sums.add_rows` with sign -1 would have done it."""
        if self.file is None:
            return
        self.file.flush()
        total = sum(len(y) for y in self.labels)
        rows = np.memmap(self.file.name, np.float32, "r", shape=(total, self.dim))
        start = 0
        for y in self.labels:
            add_rows(sums, y, np.array(rows[start : start + len(y)]), sign=-1.0)
            start += len(y)
        del rows

    def close(self) -> None:
        if self.file is not None:
            self._cleanup()
            self.file = None
        self.labels = []

    def __enter__(self) -> DroppedRows:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _remove(file) -> None:
    file.close()
    Path(file.name).unlink(missing_ok=True)
