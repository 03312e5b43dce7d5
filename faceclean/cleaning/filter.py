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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from faceclean.cleaning.dropped import DroppedRows
from faceclean.cleaning.ray_clean import ray_session, stores_for
from faceclean.cleaning.scoring import (  # noqa: F401 (re-exported: scoring's old home)
    EPS,
    LocalStores,
    Scorer,
    discriminability,
    keep_mask,
    score_batches,
    scorer_state,
)
from faceclean.cleaning.store_sums import (  # noqa: F401 (the readers' old home: re-exported)
    _checked_batches,
    _label_bound,
    add_rows,
    batch_partial,
    class_sums,
    max_label_bound,
    normalise_rows,
    sum_partials,
)
from faceclean.cleaning.thresholds import (
    Thresholds,
    choose_thresholds,
    group_sums,
    parse_thresholds,
)
from faceclean.data.store import as_paths, atomic_path, open_stores
from faceclean.errors import FacecleanError
from faceclean.outputs import writing
from faceclean.progress import RowProgress

SCORE_COLUMNS = ("cos_pos", "hardest_negative", "cos_neg", "discriminability", "keep")


@dataclass
class FilterResult:
    """Summary of a filter run. Arrays are indexed by label."""

    num_samples: int
    num_kept: int
    num_classes: int
    num_emptied: int
    num_singletons: int
    class_sums: np.ndarray | None  # float32 [K, d], all samples (None: not kept)
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
    keep_class_sums: bool = True,
    before_kept=None,
    ray_address: str | None = None,
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
        keep_class_sums: keep the all-sample sums in ``result.class_sums`` (one more K x d
            array); False turns them into the kept sums in place (``class_sums`` None).
        before_kept: called with (class sums, counts) after the scoring pass, before they
            become the kept sums (`clean --dedup` reads its centroids there).
        ray_address: run the class sums and the scoring as Ray tasks on this cluster
            ("local" starts one here; see :mod:`.ray_clean`), with the same result.

    Returns:
        A :class:`FilterResult` (``thresholds``: what was applied, and why). Two streaming
        passes (three with an ``"auto"``); memory O(K x d + one batch), never N x d: two
        float32 K x d arrays during the pass (class sums, centroids), the dropped rows
        spilled beside ``output`` (dropped x d x 4 bytes of disk) and subtracted from the
        class sums in place after it, in the order a running subtraction would have.
    """
    path = as_paths(path)
    output = Path(output) if output is not None else None
    has_norm = all("norm" in pf.schema_arrow.names for _, pf in open_stores(path))
    where = path[0] if len(path) == 1 else ", ".join(p.name for p in path)
    asked = parse_thresholds(tau_intra, min_cos_pos, min_norm, has_norm, where)
    with contextlib.ExitStack() as stack:
        if output is not None:  # checked and locked before any work
            stack.enter_context(writing(output, overwrite=overwrite, inputs=path))
        if on_block is not None and (same_identity is not None or ray_address):
            # The blocks would be similarities to group centroids, not the class centroids
            # the near-duplicate bound is stated for, or on other machines.
            raise ValueError("on_block is not supported with same_identity groups or Ray")
        if ray_address:
            stack.enter_context(ray_session(ray_address))
        return _filter(
            stores_for(path, batch_rows, ray_address),
            asked,
            has_norm,
            output,
            (loo_below, device, backend),
            progress,
            same_identity,
            on_block,
            keep_class_sums,
            before_kept,
        )


def _filter(
    stores, asked, has_norm, output, run, progress, group, on_block, keep_class_sums, before_kept
):
    sums, counts = stores.class_sums()
    scored = group_sums(sums, counts, group)  # what D is against: labels, or their groups
    columns = ("label", "embedding", "norm") if has_norm else ("label", "embedding")
    batches = stores.score_batches(scored, run, columns)
    thresholds = choose_thresholds(asked, has_norm, batches, int(counts.sum()), progress)
    kept_counts = counts.copy()
    dropped = DroppedRows(output.parent if output is not None else None)
    path = stores.path
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
        batches = stores.score_batches(scored, run, columns, thresholds, on_block)
        for batch, scores in batches:
            bar.advance(len(batch["label"]))
            device_used = scores.pop("_device")
            d = scores["discriminability"]
            if (~np.isnan(d)).any():
                top[0] = float(np.fmax(top[0], np.nanmax(d)))
            keep = keep_mask(batch, scores, thresholds)
            drop = ~keep
            if drop.any():  # Ray tasks return only the dropped rows' embeddings
                y, x = batch.get("_dropped") or (batch["label"][drop], batch["embedding"][drop])
                dropped.add(y, x)
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

    with dropped:
        if output is None:
            tables_out(None)
        else:
            with atomic_path(output) as tmp, pq.ParquetWriter(tmp, schema) as writer:
                tables_out(writer)
        batches = scored = None  # the index and centroids go with them
        if before_kept is not None:
            before_kept(sums, counts)
        kept_sums = sums.copy() if keep_class_sums else sums
        dropped.subtract_from(kept_sums)
    present = counts > 0
    return FilterResult(
        num_samples=int(counts.sum()),
        num_kept=int(kept_counts.sum()),
        num_classes=int(present.sum()),
        num_emptied=int((present & (kept_counts == 0)).sum()),
        num_singletons=int((counts == 1).sum()),
        class_sums=sums if keep_class_sums else None,
        kept_sums=kept_sums,
        counts=counts,
        kept_counts=kept_counts,
        device=device_used,
        max_discriminability=top[0],
        thresholds=thresholds,
        scores=pa.concat_tables(tables) if output is None else None,
        output=output,
    )
