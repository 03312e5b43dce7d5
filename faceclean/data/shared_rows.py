"""Stores given together must not hold the same images: `faceclean clean a.parquet
copy-of-a.parquet` (two files, one set of rows) would read every image twice, a doubled
weight in each centroid and a perfect near-duplicate for every row, which also defeats
leave-one-out. The same file named twice and shards of one split are refused earlier by
inode and shard metadata (:mod:`faceclean.data.store`); this looks at the rows themselves.

A row is its ``path`` under the store's recorded ``dataset`` root (`faceclean extract`
records it). Stores that record none are not compared: a relative path alone names no
particular image (synthetic stores all call their rows ``img/<i>.jpg``). Memory: one 64-bit hash
per row (8 bytes; the paths are read one row group at a time), and the paths of hash
matches, which are then compared as strings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from faceclean.errors import FacecleanError

_checked: set[tuple] = set()  # stores already found disjoint, by (path, inode, size, mtime)


def _hashes(pf: pq.ParquetFile, root: str | None) -> np.ndarray:
    out = []
    for i in range(pf.num_row_groups):
        paths = pf.read_row_group(i, columns=["path"]).column("path").to_pylist()
        out.append(np.fromiter((hash((root, p)) for p in paths), np.int64, len(paths)))
    return np.unique(np.concatenate(out)) if out else np.empty(0, np.int64)


def _paths_with(pf: pq.ParquetFile, root: str | None, wanted: np.ndarray) -> set[str]:
    wanted_set, found = set(wanted.tolist()), set()
    for i in range(pf.num_row_groups):
        for p in pf.read_row_group(i, columns=["path"]).column("path").to_pylist():
            if p is not None and hash((root, p)) in wanted_set:
                found.add(p)
    return found


def shared_rows(
    stores: list[tuple[Path, pq.ParquetFile]], roots: list[str | None]
) -> tuple[Path, Path, list[str]] | None:
    """The first two of ``stores`` that hold a row of one image (same path under the same
    dataset root): (the later store, the earlier one, the paths they share), or None.
    ``roots``: each store's recorded dataset root (or None)."""
    if len(stores) < 2 or any("path" not in pf.schema_arrow.names for _, pf in stores):
        return None
    seen: list[tuple[Path, pq.ParquetFile, str | None, np.ndarray]] = []
    for (p, pf), root in zip(stores, roots, strict=True):
        if root is None:
            continue
        h = _hashes(pf, root)
        for q, qf, qroot, qh in seen:
            common = np.intersect1d(h, qh, assume_unique=True) if root == qroot else ()
            if len(common):
                both = sorted(_paths_with(pf, root, common) & _paths_with(qf, qroot, common))
                if both:
                    return p, q, both
        seen.append((p, pf, root, h))
    return None


def refuse_shared_rows(stores: list[tuple[Path, pq.ParquetFile]], roots: list[str | None]):
    """Raise FacecleanError when two of ``stores`` hold a row of one image (see
    :func:`shared_rows`)."""
    key = tuple(
        (str(p.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
        for p, st in ((p, p.stat()) for p, _ in stores)
    )
    if key in _checked:
        return  # clean opens its stores several times: the rows are read once
    found = shared_rows(stores, roots)
    if found is not None:
        p, q, both = found
        raise FacecleanError(
            f"{len(both):,} of its images are also rows of {q.name} (e.g. {both[0]!r}): "
            "they would be read twice; give each image once",
            p,
        )
    _checked.add(key)
