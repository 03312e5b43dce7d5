"""Near-duplicate images: ``faceclean clean --dedup TAU [--dedup-keep]``.

Two images whose embeddings have cosine above ``tau`` (e.g. 0.98: a re-upload, a re-encode,
two crops of one photo) are duplicates; duplicates are grouped transitively. Inside one class
a group weighs one photo several times in the class centroid; a group that spans classes is
label noise (one photo filed under two identities). The search is exact (every pair above
``tau``, as all-pairs would find) but not all-pairs: see :mod:`.near_pairs` for the centroid
bound that prunes it to about one more filter pass, memory flat in rows (O(N) scalars, the
K x d centroids, one batch; never N x d in RAM).

``dedup.parquet`` lists every image in a group: ``path``, ``label``, ``identity``, ``group``
(0.. by size), ``group_size``, ``cosine`` (its strongest link inside the group),
``within_class`` (the whole group has one label) and ``keep``. With ``--dedup-keep`` the
first image (in store order) of each label inside each group is kept and the rest are left
out of the cleaning, so they weigh nothing in any centroid; groups across classes keep one
image per class, and are reported for a person to decide.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from faceclean.cleaning.graph import components
from faceclean.cleaning.near_pairs import PairSearch, near_pairs, unit_centroids_t
from faceclean.cleaning.overlap import identities, paths_of, read_exclude
from faceclean.data.store import (
    as_paths,
    atomic_path,
    iter_embeddings,
    iter_row_groups,
    open_stores,
)
from faceclean.errors import FacecleanError


@dataclass
class DedupResult:
    table: pa.Table  # one row per image in a group (see the module docstring)
    keep: np.ndarray  # bool [N] over every row of the stores, in order
    summary: dict


def find_duplicates(
    embeddings,
    tau: float,
    keep_one: bool = False,
    device: str = "auto",
    backend: str = "auto",
    *,
    sums: np.ndarray | None = None,
    counts: np.ndarray | None = None,
    spill_dir: Path | None = None,
    progress: bool = False,
) -> DedupResult:
    """Groups of images with embeddings more similar than ``tau`` (cosine).

    Args:
        embeddings: one embedding store or the shards of one.
        tau: cosine above which two images are duplicates (e.g. 0.98).
        keep_one: keep only the first image of each label inside each group.
        device, backend: accepted for symmetry with `faceclean filter`; the search runs
            blocked float32 BLAS on the CPU (see :mod:`.near_pairs`).
        sums, counts: the stores' class sums and counts, when already computed.
        spill_dir: folder for the search's temporary copy of the embeddings.
        progress: progress bars on stderr.
    """
    if not -1.0 <= tau <= 1.0:
        raise FacecleanError(f"--dedup must be a cosine in [-1, 1], not {tau}")
    del device, backend
    r, c, s = near_pairs(
        embeddings, tau, sums=sums, counts=counts, spill_dir=spill_dir, progress=progress
    )
    return group_duplicates(embeddings, r, c, s, tau, keep_one)


def group_duplicates(
    embeddings, r: np.ndarray, c: np.ndarray, s: np.ndarray, tau: float, keep_one: bool
) -> DedupResult:
    """The :class:`DedupResult` of the duplicate pairs (rows r < c, cosines s) of the
    stores: groups, ``keep`` and the summary (reads the labels and the grouped rows' paths)."""
    labels = np.concatenate(
        [b["label"] for p in as_paths(embeddings) for b in iter_embeddings(p, ("label",))]
    ).astype(np.int64)
    n = len(labels)
    comp = components(n, r, c)
    sizes = np.bincount(comp, minlength=n)
    member = np.flatnonzero(sizes[comp] > 1)
    best = np.full(n, -np.inf, np.float32)
    np.maximum.at(best, r, s)
    np.maximum.at(best, c, s)
    # Group ids 0.. by size (largest first), then by first member.
    reps = np.unique(comp[member])
    order = np.lexsort((reps, -sizes[reps]))
    group_of = np.full(n, -1, np.int64)
    remap = np.empty(n, np.int64)
    remap[reps[order]] = np.arange(len(reps))
    group_of[member] = remap[comp[member]]
    lab_min = np.full(n, np.iinfo(np.int64).max)
    lab_max = np.full(n, -1)
    np.minimum.at(lab_min, comp[member], labels[member])
    np.maximum.at(lab_max, comp[member], labels[member])
    within = lab_min[comp[member]] == lab_max[comp[member]]
    keep = np.ones(n, bool)
    if keep_one:
        # First row of each (group, label): np.unique returns first occurrences.
        _, first = np.unique(
            np.stack([group_of[member], labels[member]]), axis=1, return_index=True
        )
        keep[member] = False
        keep[member[first]] = True
    names = identities(embeddings)
    rows = member[np.lexsort((member, group_of[member]))]
    path_of = dict(zip(member.tolist(), paths_of(embeddings, member), strict=True))
    table = pa.table(
        {
            "path": pa.array([path_of[i] for i in rows.tolist()], pa.string()),
            "label": pa.array(labels[rows], pa.int64()),
            "identity": pa.array([names[x] for x in labels[rows].tolist()], pa.string()),
            "group": pa.array(group_of[rows], pa.int64()),
            "group_size": pa.array(sizes[comp[rows]], pa.int64()),
            "cosine": pa.array(best[rows], pa.float32()),
            "within_class": pa.array((lab_min[comp[rows]] == lab_max[comp[rows]]), pa.bool_()),
            "keep": pa.array(keep[rows], pa.bool_()),
        }
    )
    summary = {
        "dedup_tau": tau,
        "dedup_keep": keep_one,
        "duplicate_groups": int(len(reps)),
        "duplicate_groups_across_classes": int(len(np.unique(comp[member][~within]))),
        "images_in_duplicate_groups": int(len(member)),
        "duplicates_dropped": int((~keep).sum()),
    }
    return DedupResult(table, keep, summary)


def write_subset(
    embeddings, keep_row: np.ndarray | None, drop_labels, output: Path
) -> tuple[int, int]:
    """Copy the rows of the stores that are kept (``keep_row``, bool over all rows in order)
    and whose label is not in ``drop_labels`` into one store at ``output``; the labels,
    schema and metadata stay those of the first store. Returns (rows written, rows left out
    for their label)."""
    stores = open_stores(embeddings)
    schema = stores[0][1].schema_arrow
    drop = np.asarray(sorted(drop_labels if drop_labels is not None else ()), np.int64)
    start, rows, by_label = 0, 0, 0
    with atomic_path(output) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for _, pf in stores:
            for batch in iter_row_groups(pf, schema.names, 65536):
                labels = batch.column("label").to_numpy()
                mask = ~np.isin(labels, drop)
                by_label += int((~mask).sum())
                if keep_row is not None:
                    mask &= keep_row[start : start + len(labels)]
                start += len(labels)
                t = pa.Table.from_batches([batch.filter(pa.array(mask))])
                writer.write_table(t.cast(schema))
                rows += t.num_rows
    return rows, by_label


def dedup_from_filter(
    embeddings, search: PairSearch, sums: np.ndarray, counts: np.ndarray, out: Path
) -> dict:
    """`clean --dedup` without ``--dedup-keep``: finish a :class:`PairSearch` the filter
    fed with its own similarity blocks (``filter_store(on_block=search.add_block)``; its
    class ``sums`` and ``counts``), write ``out/dedup.parquet``, return the summary. The
    whole search then costs the filter's product plus the within-cell comparisons."""
    try:
        r, c, s = search.pairs(unit_centroids_t(sums, counts))
    finally:
        search.close()
    dr = group_duplicates(embeddings, r, c, s, search.tau, False)
    with atomic_path(out / "dedup.parquet") as tmp:
        pq.write_table(dr.table, tmp)
    return dr.summary


def restrict_inputs(
    embeddings: list[Path],
    out: Path,
    exclude=None,
    dedup: float | None = None,
    dedup_keep: bool = False,
    device: str = "auto",
    backend: str = "auto",
    progress: bool = False,
) -> tuple[list[Path], dict]:
    """The stores `faceclean clean` should clean, and what was left out (for the summary).

    ``exclude`` (an `overlap` folder or label list, see
    :func:`faceclean.cleaning.overlap.read_exclude`) drops whole classes; ``dedup`` writes
    ``out/dedup.parquet`` and, with ``dedup_keep``, drops all but one image per class of each
    duplicate group. When anything is dropped, the rest is copied to ``out/.input.parquet``
    (the caller deletes it) so that the filter and merge never see the dropped rows.
    """
    summary: dict = {}
    if exclude is not None:
        drop_labels = read_exclude(exclude, identities(embeddings))
        summary["exclude"] = str(Path(exclude).resolve())
        # Classes first: the duplicates are looked for among the rows that are cleaned,
        # never among excluded ones (their images were counted as duplicates, and a
        # group spanning an excluded class kept the wrong one).
        present = np.unique(
            np.concatenate([b["label"] for p in embeddings for b in iter_embeddings(p, ("label",))])
        )
        subset = out / ".excluded.parquet"
        _, by_label = write_subset(embeddings, None, drop_labels, subset)
        summary["excluded_classes"] = int(np.isin(drop_labels, present).sum())
        summary["excluded_samples"] = by_label
        embeddings = [subset]
    if dedup is not None:
        dr = find_duplicates(
            embeddings, dedup, dedup_keep, device, backend, spill_dir=out, progress=progress
        )
        with atomic_path(out / "dedup.parquet") as tmp:
            pq.write_table(dr.table, tmp)
        summary |= dr.summary
        if dedup_keep:
            write_subset(embeddings, dr.keep, None, out / ".input.parquet")
            if exclude is not None:
                embeddings[0].unlink()
            return [out / ".input.parquet"], summary
    if exclude is None:
        return embeddings, summary
    embeddings[0].replace(out / ".input.parquet")
    return [out / ".input.parquet"], summary
