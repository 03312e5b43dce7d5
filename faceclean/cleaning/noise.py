"""Known noise in, measured cleaning out: `faceclean inject-noise` and `evaluate-cleaning`.

:func:`inject_noise` corrupts a clean embedding store with three kinds of label noise and
returns the ground truth:

* ``outlier``: whole identities are held out; their samples are given the label of a
  random remaining identity (a face from outside the set filed under an existing name);
* ``split``: half the samples of an identity move to a new label (one person, two labels);
* ``flip``: a sample is relabelled to another existing identity.

:func:`evaluate` scores a cleaning against that truth: precision, recall and F1 of the
removed samples (recall for flips and outliers separately), and pairwise precision/recall
of the merges against the true split pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from faceclean.errors import FacecleanError

NOISE_KINDS = ("clean", "flip", "outlier", "split")


@dataclass
class NoisyStore:
    table: pa.Table  # the corrupted embedding store (same schema)
    truth: pa.Table  # path, true_label, noisy_label, noise


def inject_noise(
    table: pa.Table,
    flip: float = 0.05,
    outlier: float = 0.05,
    split: float = 0.05,
    seed: int = 0,
) -> NoisyStore:
    """Corrupt an embedding-store table (in memory).

    Args:
        table: rows with at least ``path`` and ``label``; labels 0..K-1.
        flip: fraction of the remaining samples relabelled to another identity.
        outlier: fraction of identities held out, their samples filed under others.
        split: fraction of the remaining identities split into two labels (new labels
            K, K+1, ...).
        seed: everything is drawn from ``numpy.random.default_rng(seed)``.
    """
    for name, value in (("flip", flip), ("outlier", outlier), ("split", split)):
        if not 0.0 <= value <= 1.0:  # also refuses NaN
            raise FacecleanError(f"--{name} is a fraction in [0, 1], not {value}")
    if table.num_rows == 0:
        raise FacecleanError("the embedding store is empty: nothing to corrupt")
    if table["label"].null_count:
        row = int(np.argmax(table["label"].is_null().to_numpy(zero_copy_only=False)))
        raise FacecleanError(f"row {row}: label is null")
    rng = np.random.default_rng(seed)
    true = table["label"].to_numpy().astype(np.int64)
    if true.min() < 0 or true.max() > 2 * len(true) + 1024:
        bad = int(true.min() if true.min() < 0 else true.max())
        raise FacecleanError(f"label {bad} is not an id in 0..K-1 with K at most the rows")
    k = int(true.max()) + 1
    noisy = true.copy()
    kind = np.zeros(len(true), np.int8)  # index into NOISE_KINDS
    ids = rng.permutation(k)
    n_out = int(round(outlier * k))
    held, kept_ids = ids[:n_out], ids[n_out:]
    if len(kept_ids) < 2 and (n_out or flip > 0):
        raise FacecleanError(
            f"{k} identities, {n_out} held out as outliers: at least two must remain to "
            "file outliers and flips under another identity"
        )
    is_out = np.isin(true, held)
    noisy[is_out] = rng.choice(kept_ids, is_out.sum())
    kind[is_out] = 2
    n_split = int(round(split * len(kept_ids)))
    for j, c in enumerate(rng.choice(kept_ids, n_split, replace=False)):
        members = np.flatnonzero((true == c) & ~is_out)
        moved = rng.choice(members, len(members) // 2, replace=False)
        noisy[moved] = k + j
        kind[moved] = 3
    candidates = np.flatnonzero(kind == 0)
    flipped = rng.choice(candidates, int(round(flip * len(candidates))), replace=False)
    for i in flipped:
        other = rng.choice(kept_ids[kept_ids != true[i]])
        noisy[i] = other
    kind[flipped] = 1
    identity = pa.array([f"id{v}" for v in noisy])
    out = table.set_column(table.schema.get_field_index("label"), "label", pa.array(noisy))
    if "identity" in out.column_names:
        out = out.set_column(out.schema.get_field_index("identity"), "identity", identity)
    truth = pa.table(
        {
            "path": table["path"],
            "true_label": pa.array(true),
            "noisy_label": pa.array(noisy),
            "noise": pa.array([NOISE_KINDS[v] for v in kind]),
        }
    )
    return NoisyStore(out, truth)


def _prf(tp: int, predicted: int, actual: int) -> tuple[float, float, float]:
    p = tp / predicted if predicted else 1.0
    r = tp / actual if actual else 1.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def evaluate(
    keep: np.ndarray,
    noise: np.ndarray,
    merged_label: np.ndarray | None = None,
    truth_split_pairs: set[tuple[int, int]] | None = None,
) -> dict:
    """Cleaning quality against the truth.

    Args:
        keep: bool [N], the filter's decision, rows aligned with ``noise``.
        noise: str [N], one of NOISE_KINDS per row.
        merged_label: int [K'], each noisy label's group representative (from merge).
        truth_split_pairs: {(a, b)} noisy label pairs that are really one identity.

    Returns:
        dict of floats: removal precision/recall/F1, recall_flip, recall_outlier,
        clean samples wrongly removed, and (with merges) merge pairwise precision/recall/F1.
    """
    removed = ~np.asarray(keep, bool)
    noise = np.asarray(noise)
    bad = np.isin(noise, ["flip", "outlier"])
    p, r, f = _prf(int((removed & bad).sum()), int(removed.sum()), int(bad.sum()))
    out = {
        "removed": int(removed.sum()),
        "noisy": int(bad.sum()),
        "removal_precision": p,
        "removal_recall": r,
        "removal_f1": f,
    }
    for kind in ("flip", "outlier"):
        m = noise == kind
        out[f"recall_{kind}"] = float(removed[m].mean()) if m.any() else float("nan")
    out["clean_removed_fraction"] = float(removed[~bad].mean()) if (~bad).any() else 0.0
    if merged_label is not None and truth_split_pairs is not None:
        groups: dict[int, list[int]] = {}
        for label, rep in enumerate(merged_label):
            groups.setdefault(int(rep), []).append(label)
        predicted = {(a, b) for g in groups.values() for i, a in enumerate(g) for b in g[i + 1 :]}
        tp = len(predicted & truth_split_pairs)
        mp, mr, mf = _prf(tp, len(predicted), len(truth_split_pairs))
        out.update(merge_pairs=len(predicted), merge_precision=mp, merge_recall=mr, merge_f1=mf)
    return out


def split_pairs(truth: pa.Table) -> set[tuple[int, int]]:
    """The (original label, split label) pairs of a truth table."""
    t = truth.filter(pa.compute.equal(truth["noise"], "split"))
    return {
        (min(a, b), max(a, b))
        for a, b in zip(t["true_label"].to_pylist(), t["noisy_label"].to_pylist(), strict=True)
    }
