"""Scoring a batch against the per-class state (see :mod:`.filter` for the maths): the
discriminability, the scorer, the filter's passes in this process (:class:`LocalStores`;
:class:`.ray_clean.RayStores` runs them as Ray tasks) and the keep decision."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from faceclean.cleaning.faiss_backend import InnerProductIndex
from faceclean.cleaning.store_sums import _checked_batches, class_sums, normalise_rows
from faceclean.cleaning.thresholds import Thresholds
from faceclean.data.store import as_paths
from faceclean.errors import FacecleanError

EPS = 1e-6


def discriminability(cos_pos: np.ndarray, cos_neg: np.ndarray) -> np.ndarray:
    """D = cos_pos / cos_neg, with +inf (cos_pos > 0) or 0 where cos_neg <= 1e-6."""
    safe = cos_neg > EPS
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.where(safe, cos_pos / np.where(safe, cos_neg, 1.0), 0.0)
    return np.where(safe, d, np.where(cos_pos > 0, np.inf, 0.0))


def scorer_state(
    sums: np.ndarray, counts: np.ndarray, label_map: np.ndarray | None = None, where=None
) -> dict:
    """What scoring a batch reads, per class: the unit centroids of the present classes
    (float32 [K', d], the index's database), the sums (float32 [K, d], for x . S_y), their
    squared norms (float64 [K]), counts, positions in the index; one dict, so that Ray
    tasks share it through the object store (:mod:`.ray_clean`)."""
    present = np.flatnonzero(counts > 0)
    if len(present) < 2:
        raise FacecleanError(
            f"has {len(present)} class(es); filtering needs at least two to find negatives",
            where,
        )
    # One float32 K x d centroid array (no copy when every class is present).
    centroids = normalise_rows(sums).astype(np.float32, copy=False)
    if len(present) < len(counts):
        centroids = centroids[present]
    position = np.full(len(counts), -1, np.int64)
    position[present] = np.arange(len(present))
    return {
        "centroids": centroids,
        "sums": sums.astype(np.float32, copy=False),
        "sq_norms": np.einsum("kd,kd->k", sums, sums, dtype=np.float64),
        "counts": counts,
        "present": present,
        "position": position,
        "label_map": label_map,
    }


class Scorer:
    """Scores of one batch against :func:`scorer_state` (see the module doc)."""

    def __init__(self, state: dict, loo_below=None, device="auto", backend="auto"):
        self.state, self.loo_below = state, loo_below
        self.index = InnerProductIndex(state["centroids"], device, backend)

    def __call__(self, x: np.ndarray, y: np.ndarray, on_block=None) -> dict:
        """Score columns of unit rows ``x`` (float32 [n, d]) labelled ``y``."""
        st = self.state
        y = y if st["label_map"] is None else st["label_map"][y]
        sims, pos = self.index.hardest_excluding(x, st["position"][y], on_block)
        neg = st["present"][pos]
        cos_neg = sims.astype(np.float64)
        dot = np.einsum("nd,nd->n", x, st["sums"][y]).astype(np.float64)
        n_y, sq = st["counts"][y], st["sq_norms"][y]
        full = dot / np.sqrt(sq)
        # Leave-one-out: x . (S - x) / |S - x| with |x| = 1.
        with np.errstate(invalid="ignore", divide="ignore"):
            loo = (dot - 1.0) / np.sqrt(np.maximum(sq - 2.0 * dot + 1.0, 0.0))
        cos_pos = loo if self.loo_below is None else np.where(n_y < self.loo_below, loo, full)
        singleton = n_y == 1
        cos_pos[singleton] = np.nan
        d = discriminability(cos_pos, cos_neg)
        d[singleton] = np.nan
        return {
            "cos_pos": cos_pos.astype(np.float32),
            "hardest_negative": neg.astype(np.int64),
            "cos_neg": cos_neg.astype(np.float32),
            "discriminability": d.astype(np.float32),
            "_device": self.index.device,
        }


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
    where = path[0] if len(path) == 1 else ", ".join(p.name for p in path)
    score = Scorer(scorer_state(sums, counts, label_map, where), loo_below, device, backend)
    cols = tuple(dict.fromkeys((*columns, "label", "embedding")))
    for batch in _checked_batches(path, cols, batch_rows):
        yield batch, score(batch["embedding"], batch["label"], on_block)


def keep_mask(batch: dict, scores: dict, thresholds: Thresholds) -> np.ndarray:
    """bool [n]: D >= tau_intra (NaN, a singleton, is kept) and above the floors that are
    on. Compared in float64: a threshold past float32's range (1e308) would otherwise be
    cast down with NumPy's overflow warning printed to the user."""
    keep = ~(np.float64(scores["discriminability"]) < thresholds.tau_intra)
    if thresholds.min_cos_pos is not None:
        keep &= ~(np.float64(scores["cos_pos"]) < thresholds.min_cos_pos)
    if thresholds.min_norm is not None:  # a NaN norm is not above the floor
        keep &= np.float64(batch["norm"]) >= thresholds.min_norm
    return keep


class LocalStores:
    """The filter's two passes in this process (:class:`.ray_clean.RayStores`: as Ray
    tasks, the same results)."""

    def __init__(self, path: list[Path], batch_rows: int):
        self.path, self.batch_rows = path, batch_rows

    def class_sums(self) -> tuple[np.ndarray, np.ndarray]:
        return class_sums(self.path, self.batch_rows)

    def score_batches(self, scored, run, columns, thresholds=None, on_block=None):
        """(batch, scores) in store order; ``thresholds`` is for the Ray tasks (which
        return only the dropped rows' embeddings), unused here."""
        loo_below, device, backend = run
        sums, counts, label_map = scored
        return score_batches(
            self.path,
            sums,
            counts,
            loo_below,
            self.batch_rows,
            device,
            columns,
            backend,
            label_map,
            on_block,
        )
