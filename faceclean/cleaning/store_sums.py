"""Reading embedding stores for the cleaning stage: checked batches and per-class sums.

Every batch is checked (no null, NaN/inf or zero-norm embedding, no null or negative
label, none far beyond the number of rows: an error names the file and row) and its rows
renormalised to unit length. Class sums are float32, added batch by batch from per-batch
partials, so that Ray tasks computing the partials (:mod:`.ray_clean`) give the same bits.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from faceclean.data.store import as_paths, iter_row_groups, open_store, open_stores
from faceclean.errors import FacecleanError


def _checked_batches(paths, columns, batch_rows: int) -> Iterator[dict]:
    """Stream one or several stores, refusing null, NaN/inf and zero-norm embeddings, null
    or negative labels, and labels far beyond the number of rows, with an error naming
    the file and row."""
    paths = as_paths(paths)
    rows = sum(pf.metadata.num_rows for _, pf in open_stores(paths))
    for path in paths:
        yield from _checked_file(path, columns, batch_rows, max_label_bound(rows))


def max_label_bound(rows: int) -> int:
    """The largest label accepted in a store of ``rows`` rows.

    Per-class sums take (largest label + 1) x dim float64, so a label of 2^40 would ask
    for petabytes: labels are ids 0..K-1 with K <= rows, and sharded or split-noise label
    spaces stay within twice the rows; anything beyond is refused, not allocated."""
    return 2 * rows + 1024


def _as_numpy(batch, name: str, dim: int, path: Path, start: int) -> np.ndarray:
    col = batch.column(name)
    nulls = col.is_null() if col.null_count else None
    if name == "embedding":
        if nulls is not None or col.flatten().null_count:
            # A null list, or a null value inside one: name the first row holding either.
            bad = col.is_null().to_numpy(zero_copy_only=False).copy()
            if not bad.any():
                inner = col.flatten().is_null().to_numpy(zero_copy_only=False)
                bad = inner.reshape(-1, dim).any(axis=1)
            raise FacecleanError(f"row {start + int(np.argmax(bad))}: embedding is null", path)
        values = col.flatten().to_numpy(zero_copy_only=False)
        return values.astype(np.float32, copy=False).reshape(-1, dim)
    if nulls is not None:
        row = start + int(np.argmax(nulls.to_numpy(zero_copy_only=False)))
        raise FacecleanError(f"row {row}: {name} is null", path)
    return col.to_numpy(zero_copy_only=False)


def _checked_file(
    path: Path,
    columns,
    batch_rows: int,
    max_label: int,
    groups: range | None = None,
    start: int = 0,
) -> Iterator[dict]:
    """Checked batches of one store, or of its row groups ``groups`` (the first of them at
    row ``start``, for the error messages): see :func:`_checked_batches`."""
    pf = open_store(path)
    dim = pf.schema_arrow.field("embedding").type.list_size
    for record_batch in iter_row_groups(pf, list(columns), batch_rows, groups):
        batch = {c: _as_numpy(record_batch, c, dim, path, start) for c in columns}
        emb, labels = batch["embedding"], batch["label"]
        bad = ~np.isfinite(emb).all(axis=1)
        if bad.any():
            row = start + int(np.argmax(bad))
            raise FacecleanError(f"row {row}: embedding contains NaN or inf", path)
        norms = np.linalg.norm(emb, axis=1)
        if (norms < 1e-3).any():
            row = start + int(np.argmax(norms < 1e-3))
            raise FacecleanError(f"row {row}: embedding has zero norm", path)
        if (labels < 0).any():
            raise FacecleanError(f"row {start + int(np.argmax(labels < 0))}: negative label", path)
        if len(labels) and labels.max() > max_label:
            row = start + int(np.argmax(labels > max_label))
            raise FacecleanError(
                f"row {row}: label {int(labels[row - start])} is far beyond the number of "
                f"rows (labels must be ids 0..K-1; the largest accepted here is {max_label})",
                path,
            )
        # Stored float16 or slightly off unit length: renormalise so the maths is exact.
        if np.abs(norms - 1).max() > 1e-5:
            batch["embedding"] = emb / norms[:, None]
        start += len(labels)
        yield batch


def class_sums(path, batch_rows: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Per-class embedding sums and counts, streaming: (float32 [K, d], int64 [K]).

    ``path`` is one embedding store or a list of shards (same dimension, one label space).
    K is the largest label + 1; labels that never occur have count 0 and a zero sum.

    Float32 (~1e-7 relative error, far below any threshold's resolution; float64 would
    double the largest array: 8.2 GB at 2M x 512; README, "Cleaning at scale"), allocated
    once at K read from the Parquet statistics when present (doubling holds 2x a while).
    """
    stores = open_stores(path)
    dim = stores[0][1].schema_arrow.field("embedding").type.list_size
    batches = _checked_batches(path, ("label", "embedding"), batch_rows)
    partials = (batch_partial(b["label"], b["embedding"]) for b in batches)
    return sum_partials(partials, _label_bound(stores), dim)


def sum_partials(partials, k0: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Class sums and counts from per-batch partials (:func:`batch_partial`), added in
    their order: (float32 [K, d], int64 [K]), K the largest label + 1. Allocated once at
    ``k0`` (the label bound of the Parquet statistics, 0 if unknown), else grown by
    doubling. Whoever computed the partials (this process or Ray tasks), the same partials
    in the same order give the same bits."""
    sums = np.zeros((k0, dim), np.float32)
    counts = np.zeros(k0, np.int64)
    for present, partial, n in partials:
        k = int(present[-1]) + 1 if len(present) else 0
        if k > len(counts):  # grow by doubling: sorted labels would otherwise copy per batch
            grown = max(k, 2 * len(counts))
            sums = np.vstack([sums, np.zeros((grown - len(counts), dim), np.float32)])
            counts = np.concatenate([counts, np.zeros(grown - len(counts), np.int64)])
        sums[present] += partial
        counts[present] += n
    k = int(np.flatnonzero(counts).max()) + 1 if counts.any() else 0
    if k == len(counts):
        return sums, counts
    return sums[:k].copy(), counts[:k].copy()


def _label_bound(stores) -> int:
    """Largest label + 1 from the row-group statistics (0 if any is missing or the label
    is beyond :func:`max_label_bound`: the batches then name the bad row)."""
    top, rows = -1, 0
    for _, pf in stores:
        rows += pf.metadata.num_rows
        col = pf.schema_arrow.get_field_index("label")
        for i in range(pf.metadata.num_row_groups):
            stats = pf.metadata.row_group(i).column(col).statistics
            if stats is None or not stats.has_min_max:
                return 0
            top = max(top, int(stats.max))
    return top + 1 if 0 <= top <= max_label_bound(rows) else 0


def add_rows(sums: np.ndarray, labels: np.ndarray, rows: np.ndarray, sign: float = 1.0) -> None:
    """sums[labels[i]] += sign * rows[i] for every i, in place (float32 or float64 ``sums``),
    through :func:`batch_partial`."""
    if len(labels) == 0:
        return
    present, partial, _ = batch_partial(labels, rows)
    sums[present] += sign * partial


def batch_partial(labels: np.ndarray, rows: np.ndarray) -> tuple:
    """(distinct labels, float32 [their number, d] sums of their rows, int64 row counts).

    A float32 scatter-add (torch's index_add_, ~100x faster than numpy's reduceat or
    add.at with many small classes): deterministic, since a CPU index_add_ sums each
    class's rows in batch order."""
    import torch

    present, inverse, n = np.unique(labels, return_inverse=True, return_counts=True)
    batch = torch.zeros((len(present), rows.shape[1]), dtype=torch.float32)
    with warnings.catch_warnings():  # read-only Arrow buffers: torch only reads them here
        warnings.simplefilter("ignore", UserWarning)
        source = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))
    batch.index_add_(0, torch.from_numpy(inverse.astype(np.int64).ravel()), source)
    return present, batch.numpy(), n.astype(np.int64)


def normalise_rows(m: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), in ``m``'s dtype. The norms are
    summed in float64 without a K x d temporary (``np.linalg.norm`` would square a copy)."""
    n = np.sqrt(np.einsum("kd,kd->k", m, m, dtype=np.float64))[:, None].astype(m.dtype)
    return np.divide(m, n, out=np.zeros_like(m), where=n > 0)
