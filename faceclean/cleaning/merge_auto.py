"""`--tau-inter auto` and the look-alike guard: merge thresholds the data supports.

Two labels are one identity when their centroids are as close as two halves of one class.
After the filter, every class with at least four kept samples is split in two (its kept
samples alternately, in store order) and two statistics are taken per class:

* the cosine between the two half centroids: what tau_inter must let through;
* the link ratio rho = nu_ab / sqrt(mu_a mu_b), where nu_ab is the mean cosine between a
  sample of one half and one of the other, and mu_a, mu_b the mean cosine between two
  samples within each half. All three come from sums alone: mu = (|S|^2 - n) / (n (n-1)),
  nu = S_a . S_b / (n_a n_b). Two halves of one person give rho ~ 1 whatever the model's
  cosine scale; a look-alike pair gives less (on celeb_dev's faces: same person 0.87-1.0,
  the closest different people 0.47).

tau_inter (auto) is Tukey's far-out fence (Q1 - 3 IQR) of the half-centroid cosines and
the guard's minimum ratio the same fence of the halves' rho: a link must pass both. With
fewer than ``MIN_SPLIT_CLASSES`` classes to split, tau_inter falls back to the paper's 0.62
and the guard to off, and the reason says so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from faceclean.cleaning.merge import link_ratio, mean_within
from faceclean.cleaning.store_sums import add_rows, normalise_rows
from faceclean.data.store import as_paths, iter_embeddings

FENCE_IQR = 3.0
MIN_SPLIT_CLASSES = 10
PAPER_TAU_INTER = 0.62
# identity_groups' lenient filter: noise mostly below, a split's halves near D = 1. On
# celeb_dev development seeds 100-102, 0.3 / 0.5 / 0.7 / 0.8 gave removal F1 0.934 / 0.942
# / 0.942 / 0.951 at 30 % look-alikes + distractors and merge recall 0.90 / 0.86 / 0.84 /
# 0.78 (precision 0.90 / 0.95 / 0.95 / 0.95) with 10 % splits: 0.5 balances the two.
FIRST_PASS_TAU = 0.5


def half_sums(
    embeddings: str | Path | list, keep: np.ndarray, k: int, batch_rows: int = 65536
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class sums of the kept samples, alternately into two halves in store order:
    (float64 [2, K, d], int64 [2, K]). ``keep`` is bool [N] in store order."""
    sums, counts, seen, start = None, np.zeros((2, k), np.int64), np.zeros(k, np.int64), 0
    for path in as_paths(embeddings):
        for batch in iter_embeddings(path, ("label", "embedding"), batch_rows):
            y, x = batch["label"], batch["embedding"].astype(np.float64)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            mask = keep[start : start + len(y)]
            start += len(y)
            y, x = y[mask], x[mask]
            if sums is None:
                sums = np.zeros((2, k, x.shape[1]))
            # Rank of each row within its class so far: alternate halves in store order.
            order = np.argsort(y, kind="stable")
            ys = y[order]
            first = np.r_[0, np.flatnonzero(np.diff(ys)) + 1]
            within = np.arange(len(ys)) - np.repeat(first, np.diff(np.r_[first, len(ys)]))
            rank = np.empty(len(y), np.int64)
            rank[order] = seen[ys] + within
            np.add.at(seen, y, 1)
            for h in (0, 1):
                rows = rank % 2 == h
                add_rows(sums[h], y[rows], x[rows])
                counts[h] += np.bincount(y[rows], minlength=k)
    if sums is None:
        sums = np.zeros((2, k, 0))
    return sums, counts


def _fence(values: np.ndarray) -> float:
    q1, q3 = np.quantile(values, [0.25, 0.75])
    return float(q1 - FENCE_IQR * (q3 - q1))


def choose_merge_thresholds(
    halves: np.ndarray, counts: np.ndarray
) -> tuple[float, float | None, str]:
    """(tau_inter, minimum link ratio or None, why) from :func:`half_sums`' output."""
    ok = (counts >= 2).all(axis=0)
    if ok.sum() < MIN_SPLIT_CLASSES:
        return (
            PAPER_TAU_INTER,
            None,
            (
                f"only {int(ok.sum())} classes with 4+ kept samples to split (need "
                f"{MIN_SPLIT_CLASSES}): the paper's {PAPER_TAU_INTER}, no look-alike guard"
            ),
        )
    a, b, na, nb = halves[0][ok], halves[1][ok], counts[0][ok], counts[1][ok]
    cos = np.einsum("kd,kd->k", normalise_rows(a), normalise_rows(b))
    rho = link_ratio(a, b, na, nb, mean_within(a, na), mean_within(b, nb))
    rho = rho[np.isfinite(rho)]
    tau, ratio = round(_fence(cos), 4), round(_fence(rho), 4)
    why = (
        f"{int(ok.sum())} classes split in two: half-centroid cosine median "
        f"{np.median(cos):.3f}, far-out fence {tau}; link ratio median {np.median(rho):.3f}, "
        f"fence {ratio}"
    )
    return tau, ratio, why


def resolve_merge_thresholds(
    embeddings: str | Path | list,
    keep: np.ndarray,
    k: int,
    tau_inter: float | str,
    min_ratio: float | str | None,
    batch_rows: int = 65536,
) -> tuple[float, float | None, str | None]:
    """(tau_inter, min_ratio, why) with each ``"auto"`` chosen from the kept samples'
    split statistics (one more streaming pass); ``why`` is None when nothing was auto."""
    if tau_inter != "auto" and min_ratio != "auto":
        return float(tau_inter), min_ratio, None
    halves, counts = half_sums(embeddings, np.asarray(keep, bool), k, batch_rows)
    auto_tau, auto_ratio, why = choose_merge_thresholds(halves, counts)
    return (
        auto_tau if tau_inter == "auto" else float(tau_inter),
        auto_ratio if min_ratio == "auto" else min_ratio,
        why,
    )


def identity_groups(
    embeddings: str | Path | list,
    tau_inter: float | str,
    min_ratio: float | str | None,
    first_scores: Path | None = None,
    batch_rows: int = 65536,
    device: str = "auto",
    **filter_kwargs,
) -> np.ndarray | None:
    """Each label's group of labels that are one identity (int [K], a merge's
    ``merged_label``), merged after a first, lenient filter pass (D >= FIRST_PASS_TAU,
    label by label), or None
    (score every label alone) when an auto threshold had too few classes to split or the
    groups would leave fewer than two identities to compare.

    ``--tau-intra auto`` filters again with these groups: its threshold sits near D = 1,
    where the half of a split identity is as near its twin as its own label, so scored
    alone a split's samples are dropped instead of merged (celeb_dev with 10 % of the
    identities split, seed 0: 35 % of their samples dropped; 8.5 % with the groups). The
    groups come from centroids filtered at D >= 0.5: unfiltered, look-alike flips pull a
    person's centroid toward the look-alike's and the two would be grouped, hiding the
    flips; filtered near D = 1, a split's halves would already be gone. Flips and distractors sit
    mostly below 0.5 (celeb_dev: 90 % of them below 0.57), a split's halves near 1.
    ``first_scores``: where the first pass writes its scores (None: in memory);
    ``filter_kwargs`` go to :func:`~faceclean.cleaning.filter.filter_store`.
    """
    import pyarrow.parquet as pq

    from faceclean.cleaning.filter import filter_store
    from faceclean.cleaning.merge import merge_classes

    first = filter_store(
        embeddings,
        FIRST_PASS_TAU,
        first_scores,
        batch_rows=batch_rows,
        device=device,
        keep_class_sums=False,  # only the kept sums are merged
        **filter_kwargs,
    )
    if first.num_kept == 0:
        return None
    scores = first.scores if first_scores is None else pq.read_table(first_scores, columns=["keep"])
    keep = scores["keep"].to_numpy(zero_copy_only=False)
    tau, ratio = tau_inter, min_ratio
    if "auto" in (tau_inter, min_ratio):
        halves, half_counts = half_sums(embeddings, keep, len(first.counts), batch_rows)
        auto_tau, auto_ratio, _ = choose_merge_thresholds(halves, half_counts)
        if auto_ratio is None:  # too few classes to split: nothing was measured
            return None
        tau = auto_tau if tau_inter == "auto" else float(tau_inter)
        ratio = auto_ratio if min_ratio == "auto" else min_ratio
    counts = first.kept_counts
    groups = merge_classes(first.kept_sums, counts, tau, device=device, min_ratio=ratio)
    labels = groups.merged_label
    return labels if len(np.unique(labels[counts > 0])) >= 2 else None
