"""The face queues of the review index (removals, borderline kept) and the per-class strips.

Built from ``scores.parquet`` without holding it whole: the numeric columns are read to
choose and order the rows (about 17 bytes a row), then one streaming pass gathers the
strings (path, identity) of the chosen rows only; the norms come the same way from the
embeddings. At WebFace42M's 42M rows that is ~0.7 GB of numbers, not the table's
several GB of strings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

BATCH = 65536
BORDER = 1.5
TYPICAL = 5
NUMERIC = ["label", "cos_pos", "hardest_negative", "discriminability", "keep"]


def gather(path: Path, rows: np.ndarray, columns: list[str]) -> pa.Table:
    """``columns`` of the rows ``rows`` (indices into the file, in any order, repeats
    allowed), in that order; one pass over the file, batch by batch."""
    need = np.unique(rows)
    parts, start = [], 0
    for batch in pq.ParquetFile(path).iter_batches(BATCH, columns=columns):
        lo, hi = np.searchsorted(need, [start, start + batch.num_rows])
        if hi > lo:
            parts.append(pa.Table.from_batches([batch]).take(pa.array(need[lo:hi] - start)))
        start += batch.num_rows
    if not parts:
        return pq.read_schema(path).empty_table().select(columns)
    return pa.concat_tables(parts).take(pa.array(np.searchsorted(need, rows)))


def norms(embeddings: list[str], paths: pa.Array) -> pa.Array:
    """The raw feature norm of each path, from the embedding stores (streamed; null where
    a store has no norm or is gone: the norm is shown, never needed)."""
    found_paths, found_norms = [], []
    for store in map(Path, embeddings):
        try:
            if "norm" not in pq.read_schema(store).names:
                continue
            for batch in pq.ParquetFile(store).iter_batches(BATCH, columns=["path", "norm"]):
                hit = pc.is_in(batch.column("path"), value_set=paths)
                found_paths.append(batch.column("path").filter(hit))
                found_norms.append(batch.column("norm").filter(hit).cast(pa.float32()))
        except (OSError, ValueError, pa.ArrowException):
            continue
    if not found_paths:
        return pa.nulls(len(paths), pa.float32())
    where = pc.index_in(paths, value_set=pa.chunked_array(found_paths).combine_chunks())
    return pc.take(pa.chunked_array(found_norms).combine_chunks(), where)


def _typical_rows(labels: np.ndarray, keep: np.ndarray, cos: np.ndarray) -> np.ndarray:
    """Rows of each class's TYPICAL highest cos_pos among the kept ones (all rows for a
    class the filter emptied), grouped by label, most typical first."""
    kept_classes = np.unique(labels[keep])
    rows = np.flatnonzero(keep | ~np.isin(labels, kept_classes))
    rows = rows[np.lexsort((-np.nan_to_num(cos[rows], nan=-2.0), labels[rows]))]
    lab = labels[rows]
    start = np.r_[0, np.flatnonzero(np.diff(lab)) + 1] if len(rows) else np.zeros(0, int)
    rank = np.arange(len(rows)) - np.repeat(start, np.diff(np.r_[start, len(rows)]))
    return rows[rank < TYPICAL]


def face_queues(scores: Path, tau: float, embeddings: list[str]) -> dict[str, pa.Table]:
    """``removals`` (by |D - tau|), ``borderline`` (kept, tau <= D < BORDER x tau, by D) and
    ``typical`` (label, identity, faces) from a scores table (see :mod:`.index`)."""
    num = pq.read_table(scores, columns=NUMERIC)
    labels = num["label"].to_numpy()
    keep = num["keep"].to_numpy(zero_copy_only=False)
    cos = num["cos_pos"].to_numpy(zero_copy_only=False).astype(np.float32)
    d = num["discriminability"].to_numpy(zero_copy_only=False).astype(np.float64)
    neg = num["hardest_negative"].to_numpy()
    del num
    present, first = np.unique(labels, return_index=True)
    names = gather(scores, first, ["identity"])["identity"].combine_chunks()

    typ = _typical_rows(labels, keep, cos)
    faces: dict[int, list[str]] = {}
    typ_paths = gather(scores, typ, ["path"])["path"].to_pylist()
    for lab, p in zip(labels[typ].tolist(), typ_paths, strict=True):
        faces.setdefault(lab, []).append(p)
    typical = pa.table(
        {
            "label": pa.array(present, pa.int64()),
            "identity": names,
            "faces": pa.array([faces.get(int(k), []) for k in present], pa.list_(pa.string())),
        }
    )

    removed = np.flatnonzero(~keep)
    removed = removed[np.argsort(np.abs(d[removed] - tau), kind="stable")]
    upper = tau * BORDER if tau > 0 else tau + 0.1
    with np.errstate(invalid="ignore"):
        border = np.flatnonzero(keep & np.isfinite(d) & (d < upper))
    border = border[np.argsort(d[border], kind="stable")]
    rows = np.concatenate([removed, border]).astype(np.int64)
    strings = gather(scores, rows, ["path", "identity", "cos_neg"])
    where = np.clip(np.searchsorted(present, neg[rows]), 0, len(present) - 1)
    known = pa.array(present[where] == neg[rows])
    table = pa.table(
        {
            "key": strings["path"],
            "path": strings["path"],
            "label": pa.array(labels[rows], pa.int64()),
            "identity": strings["identity"],
            "hardest_negative": pa.array(neg[rows], pa.int64()),
            "negative_identity": pc.if_else(known, names.take(pa.array(where)), None),
            "discriminability": pa.array(d[rows], pa.float32()),
            "cos_pos": pa.array(cos[rows], pa.float32()),
            "cos_neg": strings["cos_neg"].cast(pa.float32()),
            "norm": norms(embeddings, strings["path"].combine_chunks()),
        }
    )
    return {
        "removals": table.slice(0, len(removed)),
        "borderline": table.slice(len(removed)),
        "typical": typical,
    }
