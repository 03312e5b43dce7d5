"""`faceclean filter`: drop the samples that do not belong to their class.

For L2-normalised embeddings x_i with labels y_i (DESIGN.md, "The cleaning math"):

* centroid c_k = normalise(sum of x_i with label k), summed streaming over row groups;
* cos_pos(i) = x_i . c_{y_i} where the own centroid leaves x_i out,
  c = normalise(S_y - x_i) (exact, same cost), so a sample never vouches for itself.
  Measured on real faces with injected noise (ORL, see the README), it finds noise far
  better than the full centroid. ``loo_below=n`` restores 0.1's behaviour: leave-one-out
  only in classes of fewer than n samples, the full centroid elsewhere;
* the hardest negative n*(i) = argmax_{k != y_i} x_i . c_k (exact FAISS inner-product
  top-2 over the centroids of non-empty classes), cos_neg(i) = x_i . c_{n*(i)};
* discriminability D_i = cos_pos / cos_neg. Where cos_neg <= 1e-6 the ratio means nothing:
  D_i = +inf when cos_pos > 0 (the sample is far from every other class) and 0 otherwise;
* keep_i = D_i >= tau_intra. Singletons (one sample, nothing to compare with) are kept
  with D = NaN. Floors for junk may also drop cos_pos < min_cos_pos, norm < min_norm;
  any of the three may be ``"auto"`` (see :mod:`.thresholds`).

Stated behaviour: a store with fewer than two classes is an error; classes whose every
sample is dropped vanish from the clean list and are counted in the summary.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from faceclean.cleaning.faiss_backend import InnerProductIndex
from faceclean.cleaning.thresholds import (
    Thresholds,
    choose_thresholds,
    group_sums,
    parse_thresholds,
)
from faceclean.data.store import (
    as_paths,
    atomic_path,
    iter_row_groups,
    open_store,
    open_stores,
)
from faceclean.errors import FacecleanError
from faceclean.outputs import writing
from faceclean.progress import RowProgress

EPS = 1e-6
SCORE_COLUMNS = ("cos_pos", "hardest_negative", "cos_neg", "discriminability", "keep")


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


def _checked_file(path: Path, columns, batch_rows: int, max_label: int) -> Iterator[dict]:
    pf = open_store(path)
    dim = pf.schema_arrow.field("embedding").type.list_size
    start = 0
    for record_batch in iter_row_groups(pf, list(columns), batch_rows):
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
    k0 = _label_bound(stores)
    sums = np.zeros((k0, dim), np.float32)
    counts = np.zeros(k0, np.int64)
    for batch in _checked_batches(path, ("label", "embedding"), batch_rows):
        labels, emb = batch["label"], batch["embedding"]
        k = int(labels.max()) + 1 if len(labels) else 0
        if k > len(counts):  # grow by doubling: sorted labels would otherwise copy per batch
            grown = max(k, 2 * len(counts))
            sums = np.vstack([sums, np.zeros((grown - len(counts), dim), np.float32)])
            counts = np.concatenate([counts, np.zeros(grown - len(counts), np.int64)])
        add_rows(sums, labels, emb)
        counts += np.bincount(labels, minlength=len(counts))
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
    """sums[labels[i]] += sign * rows[i] for every i, in place (float32 or float64 ``sums``).

    A float32 scatter-add over the batch's distinct labels (torch's index_add_, ~100x
    faster than numpy's reduceat or add.at with many small classes), then one add into
    ``sums``: deterministic, since a CPU index_add_ sums each class's rows in batch order.
    """
    import torch

    if len(labels) == 0:
        return
    present, inverse = np.unique(labels, return_inverse=True)
    batch = torch.zeros((len(present), rows.shape[1]), dtype=torch.float32)
    with warnings.catch_warnings():  # read-only Arrow buffers: torch only reads them here
        warnings.simplefilter("ignore", UserWarning)
        source = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))
    batch.index_add_(0, torch.from_numpy(inverse.astype(np.int64).ravel()), source)
    sums[present] += sign * batch.numpy()


def normalise_rows(m: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), in ``m``'s dtype. The norms are
    summed in float64 without a K x d temporary (``np.linalg.norm`` would square a copy)."""
    n = np.sqrt(np.einsum("kd,kd->k", m, m, dtype=np.float64))[:, None].astype(m.dtype)
    return np.divide(m, n, out=np.zeros_like(m), where=n > 0)


def discriminability(cos_pos: np.ndarray, cos_neg: np.ndarray) -> np.ndarray:
    """D = cos_pos / cos_neg, with +inf (cos_pos > 0) or 0 where cos_neg <= 1e-6."""
    safe = cos_neg > EPS
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.where(safe, cos_pos / np.where(safe, cos_neg, 1.0), 0.0)
    return np.where(safe, d, np.where(cos_pos > 0, np.inf, 0.0))


@dataclass
class FilterResult:
    """Summary of a filter run. Arrays are indexed by label."""

    num_samples: int
    num_kept: int
    num_classes: int
    num_emptied: int
    num_singletons: int
    class_sums: np.ndarray  # float32 [K, d], all samples
    kept_sums: np.ndarray  # float32 [K, d], kept samples only (for merge)
    counts: np.ndarray  # int64 [K]
    kept_counts: np.ndarray  # int64 [K]
    device: str
    scores: pa.Table | None = None
    output: Path | None = None
    max_discriminability: float = float("nan")  # the largest D (NaN: only singletons)
    thresholds: Thresholds | None = None  # what was applied, and why for the automatic ones

    def require_kept(self, tau_intra: float, where=None) -> None:
        """Raise a named error when the threshold dropped every sample: an empty clean
        list or merge must never look like a result."""
        if self.num_kept == 0:
            what, advice = self.what_drops_all(tau_intra)
            raise FacecleanError(
                f"{what} drops every sample (the largest D is "
                f"{self.max_discriminability:.3g}); nothing would be left: {advice}",
                where,
            )

    def what_drops_all(self, tau_intra: float) -> tuple[str, str]:
        """(which threshold empties the set, what to change), for the warning and the
        error: tau_intra when no sample reaches it, else the floors that are on."""
        floors = self.thresholds.floors() if self.thresholds else ""
        if not floors or not self.max_discriminability >= tau_intra:
            return f"tau_intra {tau_intra}{floors}", "lower --tau-intra"
        return f"the floor(s){floors.replace(' with', '')}", "lower the floor(s) or turn them off"

    @property
    def dropped_per_class(self) -> np.ndarray:
        """int64 [K]: samples of each class the filter dropped."""
        return self.counts - self.kept_counts


def score_batches(
    path: str | Path | list,
    sums: np.ndarray,
    counts: np.ndarray,
    loo_below: int | None = None,
    batch_rows: int = 65536,
    device: str = "auto",
    columns: tuple[str, ...] = ("path", "label", "identity", "embedding"),
    backend: str = "auto",
    label_map: np.ndarray | None = None,
    on_block=None,
) -> Iterator[tuple[dict, dict]]:
    """Yield (input batch, score columns) for every batch of the store(s); see module doc.
    With ``label_map`` (label -> group), sums and counts are per group. ``on_block``: see
    :meth:`InnerProductIndex.hardest_excluding` (`clean --dedup`)."""
    path = as_paths(path)
    present = np.flatnonzero(counts > 0)
    if len(present) < 2:
        raise FacecleanError(
            f"has {len(present)} class(es); filtering needs at least two to find negatives",
            path[0] if len(path) == 1 else ", ".join(p.name for p in path),
        )
    # One float32 K x d centroid array (no copy when every class is present).
    centroids = normalise_rows(sums).astype(np.float32, copy=False)
    every = len(present) == len(counts)
    index = InnerProductIndex(centroids if every else centroids[present], device, backend)
    del centroids
    position = np.full(len(counts), -1, np.int64)
    position[present] = np.arange(len(present))
    sq_norms = np.einsum("kd,kd->k", sums, sums, dtype=np.float64)
    sums32 = sums.astype(np.float32, copy=False)
    cols = tuple(dict.fromkeys((*columns, "label", "embedding")))
    for batch in _checked_batches(path, cols, batch_rows):
        x, y = batch["embedding"], batch["label"]
        y = y if label_map is None else label_map[y]
        sims, pos = index.hardest_excluding(x, position[y], on_block)
        neg = present[pos]
        cos_neg = sims.astype(np.float64)
        dot = np.einsum("nd,nd->n", x, sums32[y]).astype(np.float64)
        n_y = counts[y]
        full = dot / np.sqrt(sq_norms[y])
        # Leave-one-out: x . (S - x) / |S - x| with |x| = 1.
        with np.errstate(invalid="ignore", divide="ignore"):
            loo = (dot - 1.0) / np.sqrt(np.maximum(sq_norms[y] - 2.0 * dot + 1.0, 0.0))
        cos_pos = loo if loo_below is None else np.where(n_y < loo_below, loo, full)
        singleton = n_y == 1
        cos_pos[singleton] = np.nan
        d = discriminability(cos_pos, cos_neg)
        d[singleton] = np.nan
        yield (
            batch,
            {
                "cos_pos": cos_pos.astype(np.float32),
                "hardest_negative": neg.astype(np.int64),
                "cos_neg": cos_neg.astype(np.float32),
                "discriminability": d.astype(np.float32),
                "_device": index.device,
            },
        )


def filter_store(
    path: str | Path | list,
    tau_intra: float | str = 0.3,
    output: str | Path | None = None,
    *,
    min_cos_pos: float | str | None = None,
    min_norm: float | str | None = None,
    same_identity: np.ndarray | None = None,
    loo_below: int | None = None,
    batch_rows: int = 65536,
    device: str = "auto",
    backend: str = "auto",
    overwrite: bool = False,
    progress: bool = False,
    on_block=None,
) -> FilterResult:
    """Score every sample of an embedding store and keep those with D >= ``tau_intra``.

    Args:
        path: embedding store (see :mod:`faceclean.data.store`), or a list of shards that share
            one embedding dimension and one label space.
        tau_intra: threshold on discriminability (paper: 0.3; useful range ~0.1-0.5), or
            ``"auto"``: chosen from the distribution of D (see :mod:`.thresholds`).
        output: scores Parquet to write (columns ``path``, ``label``, ``identity``,
            ``cos_pos``, ``hardest_negative``, ``cos_neg``, ``discriminability``, ``keep``).
            None keeps the table in memory (``result.scores``).
        min_cos_pos, min_norm: floors for junk, also dropping cos_pos < min_cos_pos and
            ``norm`` (the store's raw feature norm) < min_norm; ``"auto"``: far-out fences
            of their distributions (no norm floor without a norm column); None: off.
        same_identity: int [K], labels that are one identity (a merge's ``merged_label``):
            D against the own group and other groups (a split twin is no negative).
        loo_below: None (default): every own centroid leaves the sample out; n: only in
            classes of fewer than n samples (0.1's behaviour with 10).
        batch_rows: rows per streamed batch (bounds memory).
        device: "auto" (GPU when FAISS sees one), "cpu" or "cuda".
        backend: "auto" (FAISS on GPU, blocked BLAS on CPU), "faiss" or "blas"; all exact.
        progress: show a progress bar (rows scored) on stderr.
        on_block: called with each block of rows and its similarities to every centroid
            (`clean --dedup` shares the filter's product; see :mod:`.near_pairs`).

    Returns:
        A :class:`FilterResult` (``thresholds``: what was applied, and why). Two streaming
        passes (three with an ``"auto"``); memory O(K x d + one batch), never N x d.
    """
    path = as_paths(path)
    output = Path(output) if output is not None else None
    has_norm = all("norm" in pf.schema_arrow.names for _, pf in open_stores(path))
    where = path[0] if len(path) == 1 else ", ".join(p.name for p in path)
    asked = parse_thresholds(tau_intra, min_cos_pos, min_norm, has_norm, where)
    with contextlib.ExitStack() as stack:
        if output is not None:  # checked and locked before any work
            stack.enter_context(writing(output, overwrite=overwrite, inputs=path))
        run = (loo_below, batch_rows, device, backend, progress)
        return _filter(path, asked, has_norm, output, *run, same_identity, on_block)


def _filter(
    path,
    asked,
    has_norm,
    output,
    loo_below,
    batch_rows,
    device,
    backend,
    progress,
    group,
    on_block=None,
):
    if group is not None and on_block is not None:
        # The blocks would be similarities to group centroids, not the class centroids the
        # near-duplicate bound is stated for (clean shares the product only without groups).
        raise ValueError("on_block is not supported with same_identity groups")
    sums, counts = class_sums(path, batch_rows)
    scored = group_sums(sums, counts, group)  # what D is against: labels, or their groups
    columns = ("label", "embedding", "norm") if has_norm else ("label", "embedding")
    batches = score_batches(
        path, *scored[:2], loo_below, batch_rows, device, columns, backend, scored[2]
    )
    thresholds = choose_thresholds(asked, has_norm, batches, int(counts.sum()), progress)
    tau_intra = thresholds.tau_intra
    kept_sums = sums.copy()
    kept_counts = counts.copy()
    schema = pa.schema(
        [
            ("path", pa.string()),
            ("label", pa.int64()),
            ("identity", pa.string()),
            ("cos_pos", pa.float32()),
            ("hardest_negative", pa.int64()),
            ("cos_neg", pa.float32()),
            ("discriminability", pa.float32()),
            ("keep", pa.bool_()),
        ]
    )
    has_identity = all("identity" in pf.schema_arrow.names for _, pf in open_stores(path))
    columns = (
        ("path", "label", "identity", "embedding")
        if has_identity
        else ("path", "label", "embedding")
    )
    if thresholds.min_norm is not None:
        columns = (*columns, "norm")
    tables, device_used, top = [], "cpu", [float("nan")]

    def tables_out(writer):
        nonlocal device_used
        bar = RowProgress(progress, "filter", int(counts.sum()))
        batches = score_batches(
            path, *scored[:2], loo_below, batch_rows, device, columns, backend, scored[2], on_block
        )
        for batch, scores in batches:
            bar.advance(len(batch["label"]))
            device_used = scores.pop("_device")
            d = scores["discriminability"]
            if (~np.isnan(d)).any():
                top[0] = float(np.fmax(top[0], np.nanmax(d)))
            # Compared in float64: a threshold past float32's range (1e308) would otherwise
            # be cast down with NumPy's overflow warning printed to the user.
            keep = ~(np.float64(d) < tau_intra)  # NaN (singletons) is kept
            if thresholds.min_cos_pos is not None:
                keep &= ~(np.float64(scores["cos_pos"]) < thresholds.min_cos_pos)
            if thresholds.min_norm is not None:  # a NaN norm is not above the floor
                keep &= np.float64(batch["norm"]) >= thresholds.min_norm
            drop = ~keep
            if drop.any():
                y = batch["label"][drop]
                add_rows(kept_sums, y, batch["embedding"][drop], sign=-1.0)
                np.subtract.at(kept_counts, y, 1)
            identity = batch["identity"] if has_identity else batch["label"].astype(str)
            table = pa.table(
                {
                    "path": batch["path"],
                    "label": batch["label"],
                    "identity": identity,
                    **scores,
                    "keep": keep,
                },
                schema=schema,
            )
            if writer is None:
                tables.append(table)
            else:
                writer.write_table(table)
        bar.close()

    if output is None:
        tables_out(None)
    else:
        with atomic_path(output) as tmp, pq.ParquetWriter(tmp, schema) as writer:
            tables_out(writer)
    present = counts > 0
    return FilterResult(
        num_samples=int(counts.sum()),
        num_kept=int(kept_counts.sum()),
        num_classes=int(present.sum()),
        num_emptied=int((present & (kept_counts == 0)).sum()),
        num_singletons=int((counts == 1).sum()),
        class_sums=sums,
        kept_sums=kept_sums,
        counts=counts,
        kept_counts=kept_counts,
        device=device_used,
        max_discriminability=top[0],
        thresholds=thresholds,
        scores=pa.concat_tables(tables) if output is None else None,
        output=output,
    )
