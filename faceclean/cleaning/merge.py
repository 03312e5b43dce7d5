"""`faceclean merge`: unite classes that are the same identity.

Classes a, b are linked when their centroids' cosine c_a . c_b > tau_inter (paper: 0.62).
Links are found exactly with a FAISS inner-product kNN over the centroids (k doubles until
every class's k-th neighbour is below the threshold), and linked classes are grouped
transitively (union-find). Transitivity can chain strangers (A~B, B~C, A and C unrelated)
into one giant group, so ``max_group_size`` guards it: inside a group that is too large the
weakest links are cut, one by one, until every part is small enough. Every group is
reported, with every link and its cosine.

With ``min_ratio`` (the look-alike guard, see :mod:`.merge_auto`) a link also needs its
ratio rho = (mean cross-class cosine) / sqrt(product of the two mean within-class cosines)
to reach ``min_ratio``: look-alikes are close but less close than a class is to itself.
Every link above tau_inter is listed with its ``ratio``; a link the guard refused is
``merged`` False unless other links join the two classes.

Stated behaviour: with no class present (a filter that dropped everything) or one, there is
nothing to link: every table is empty or the identity. A merge that unites more than
``WARN_MERGED_SHARE`` of the classes is almost surely a threshold typo (``tau_inter`` near
or below 0): it is flagged in ``MergeResult.warning`` and the CLI prints it loudly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from faceclean.cleaning.faiss_backend import InnerProductIndex, pairs_above
from faceclean.cleaning.filter import normalise_rows
from faceclean.cleaning.graph import component_groups

WARN_MERGED_SHARE = 0.5  # of the present classes, inside merged groups


@dataclass
class MergeResult:
    """``merged_label[k]`` is the smallest label in k's group (k itself when unmerged);
    ``table`` has ``label``, ``merged_label``, ``group_size`` for every present class;
    ``pairs`` has ``label_a``, ``label_b``, ``cosine``, ``ratio`` (the guard's rho) and
    ``merged`` for every link above tau_inter."""

    merged_label: np.ndarray
    table: pa.Table
    pairs: pa.Table
    groups: list[list[int]]  # groups of two or more classes, largest first
    num_split_groups: int  # groups the chain guard had to cut
    merged_share: float = 0.0  # share of the present classes inside merged groups
    warning: str | None = None  # set when merged_share > WARN_MERGED_SHARE
    num_guarded: int = 0  # links above tau_inter the look-alike guard refused

    @property
    def classes_in_groups(self) -> int:
        return int(sum(len(g) for g in self.groups))


def mean_within(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mean cosine between two distinct unit samples of each class (NaN below 2)."""
    sq = np.einsum("kd,kd->k", sums, sums, dtype=np.float64)  # float64 sums, no copy
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts >= 2, (sq - counts) / (counts * (counts - 1.0)), np.nan)


def link_ratio(sa, sb, na, nb, mu_a, mu_b) -> np.ndarray:
    """rho = (S_a . S_b / (n_a n_b)) / sqrt(mu_a mu_b), rows of sums and their stats."""
    nu = np.einsum("kd,kd->k", sa, sb) / (na * nb)
    with np.errstate(invalid="ignore"):
        return nu / np.sqrt(np.maximum(mu_a * mu_b, 1e-12))


def _guarded(nodes, a, b, w, max_size: int) -> tuple[list[np.ndarray], bool]:
    """Components, cutting the weakest links of any component larger than ``max_size``."""
    out, cut = [], False
    stack = [(nodes, a, b, w)]
    while stack:
        nodes, a, b, w = stack.pop()
        for comp in component_groups(nodes, a, b):
            if max_size <= 0 or len(comp) <= max_size:
                out.append(comp)
                continue
            cut = True
            inside = np.isin(a, comp) & np.isin(b, comp)
            ca, cb, cw = a[inside], b[inside], w[inside]
            strong = cw > cw.min()  # drop the weakest link(s) and look again
            stack.append((comp, ca[strong], cb[strong], cw[strong]))
    return out, cut


def centroid_links(
    centroids: np.ndarray, labels: np.ndarray, tau_inter: float, device: str = "auto"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (label_a < label_b) of the given unit centroids with cosine > tau_inter."""
    if len(labels) < 2:  # nothing to link (and an index over nothing is ill-defined)
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, np.float32)
    index = InnerProductIndex(centroids, device)
    rows, cols, vals = pairs_above(index, centroids, tau_inter, k=16)
    # Both directions are found; keep each pair once with the smaller position first.
    ok = rows < cols
    la, lb = labels[rows[ok]], labels[cols[ok]]
    order = np.lexsort((lb, la))
    return la[order], lb[order], vals[ok][order]


def merge_classes(
    sums: np.ndarray,
    counts: np.ndarray,
    tau_inter: float = 0.62,
    max_group_size: int = 0,
    device: str = "auto",
    min_ratio: float | None = None,
) -> MergeResult:
    """Group classes whose centroids are more similar than ``tau_inter``.

    Args:
        sums: float [K, d] per-class embedding sums (e.g. of the samples the filter kept).
        counts: int [K] samples per class; classes with 0 take no part.
        tau_inter: cosine threshold (paper: 0.62).
        max_group_size: largest group allowed (0 = no limit): bigger groups are split by
            cutting their weakest links.
        device: FAISS device, "auto", "cpu" or "cuda".
        min_ratio: the look-alike guard: links whose ratio rho is below this are not
            merged (None: off).
    """
    present = np.flatnonzero(counts > 0)
    # float32 throughout, one K x d copy at most (no float64 intermediates: at 2M classes
    # x 512-d each would be 8.2 GB).
    sums, counts = np.asarray(sums), np.asarray(counts)
    kept = sums if len(present) == len(sums) else sums[present]
    centroids = normalise_rows(kept.astype(np.float32, copy=False))
    a, b, w = centroid_links(centroids, present, tau_inter, device)  # a, b: labels
    mu = mean_within(sums, counts)
    # Only the linked rows in float64 (the guard's ratio), never a K x d copy.
    sa, sb = np.asarray(sums[a], np.float64), np.asarray(sums[b], np.float64)
    ratio = link_ratio(sa, sb, counts[a], counts[b], mu[a], mu[b])
    # A singleton has no within-class cosine: its ratio is NaN and the guard lets it pass.
    held = ratio < min_ratio if min_ratio is not None else np.zeros(len(a), bool)
    comps, cut = _guarded(present, a[~held], b[~held], w[~held], max_group_size)
    merged = np.arange(len(counts), dtype=np.int64)
    size = np.zeros(len(counts), np.int64)
    groups = []
    n_cut = 0
    for comp in comps:
        merged[comp] = comp.min()
        size[comp] = len(comp)
        if len(comp) > 1:
            groups.append(comp.tolist())
    if cut:
        n_cut = sum(
            1 for g in component_groups(present, a[~held], b[~held]) if len(g) > max_group_size
        )
    same = merged[a] == merged[b]
    groups.sort(key=lambda g: (-len(g), g[0]))
    share = sum(len(g) for g in groups) / max(len(present), 1)
    warning = None
    if share > WARN_MERGED_SHARE:
        warning = (
            f"tau_inter {tau_inter} merged {share:.0%} of the {len(present)} classes into "
            f"{len(groups)} group(s), the largest of {len(groups[0])}: check the threshold"
        )
    return MergeResult(
        merged_label=merged,
        table=pa.table(
            {"label": present, "merged_label": merged[present], "group_size": size[present]}
        ),
        pairs=pa.table(
            {
                "label_a": a,
                "label_b": b,
                "cosine": w,
                "ratio": ratio.astype(np.float32),
                "merged": same,
            },
        ),
        groups=groups,
        num_split_groups=n_cut,
        merged_share=share,
        warning=warning,
        num_guarded=int(held.sum()),
    )
