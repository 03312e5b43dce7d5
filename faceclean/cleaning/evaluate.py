"""`faceclean evaluate-cleaning`: a clean's output scored against injected noise, and a
sweep of both thresholds written as a table and a precision-recall plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from faceclean.cleaning.clean import read_clean_summary
from faceclean.cleaning.filter import filter_store
from faceclean.cleaning.merge import merge_classes
from faceclean.cleaning.noise import evaluate, split_pairs
from faceclean.data.store import atomic_path
from faceclean.errors import FacecleanError

TAU_INTRA_SWEEP = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
TAU_INTER_SWEEP = (0.3, 0.4, 0.5, 0.55, 0.6, 0.62, 0.65, 0.7, 0.8, 0.9)


def _aligned_noise(scores: pa.Table, truth: pa.Table, truth_path: Path) -> np.ndarray:
    by_path = dict(zip(truth["path"].to_pylist(), truth["noise"].to_pylist(), strict=True))
    try:
        return np.asarray([by_path[p] for p in scores["path"].to_pylist()])
    except KeyError as e:
        raise FacecleanError(
            f"path {e.args[0]!r} of the scores is not in the truth", truth_path
        ) from None


def sweep(
    embeddings: list,
    scores: pa.Table,
    noise: np.ndarray,
    pairs: set,
    tau_intra: float,
    device: str = "auto",
) -> pa.Table:
    """Quality at every threshold of the sweeps: filter sweep reuses the scores' D; merge
    sweep merges the centroids of the samples kept at ``tau_intra``."""
    d = scores["discriminability"].to_numpy(zero_copy_only=False)
    rows = []
    for t in TAU_INTRA_SWEEP:
        keep = ~(d < t)
        rows.append({"stage": "filter", "threshold": t, **evaluate(keep, noise)})
    fr = filter_store(embeddings, tau_intra, None, device=device)
    keep = fr.scores["keep"].to_numpy(zero_copy_only=False)
    for t in TAU_INTER_SWEEP:
        mr = merge_classes(fr.kept_sums, fr.kept_counts, t, device=device)
        rows.append(
            {"stage": "merge", "threshold": t, **evaluate(keep, noise, mr.merged_label, pairs)}
        )
    keys = list(dict.fromkeys(k for row in rows for k in row))
    return pa.table({k: [row.get(k) for row in rows] for k in keys})


def plot_sweep(table: pa.Table, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, stage, prefix, label in (
        (axes[0], "filter", "removal", "tau_intra"),
        (axes[1], "merge", "merge", "tau_inter"),
    ):
        t = table.filter(pa.compute.equal(table["stage"], stage))
        x = t["threshold"].to_numpy()
        for metric in ("precision", "recall", "f1"):
            ax.plot(x, t[f"{prefix}_{metric}"].to_numpy(), marker="o", label=metric)
        ax.set_xlabel(label)
        ax.set_title(f"{stage}: {prefix} quality")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def evaluate_clean_dir(
    clean_dir: str | Path, truth_path: str | Path, do_sweep: bool = False
) -> dict:
    """Score ``faceclean clean`` outputs in ``clean_dir`` against an inject-noise truth.

    Returns the metrics of :func:`faceclean.cleaning.noise.evaluate`; with ``do_sweep`` also writes
    ``sweep.csv`` and ``sweep.png`` (precision/recall/F1 against each threshold) there.
    """
    clean_dir, truth_path = Path(clean_dir), Path(truth_path)
    summary = read_clean_summary(clean_dir)
    scores = pq.read_table(clean_dir / "scores.parquet")
    truth = pq.read_table(truth_path)
    noise = _aligned_noise(scores, truth, truth_path)
    merges = pq.read_table(clean_dir / "merges.parquet")
    k = int(max(merges["label"].to_numpy().max(), truth["noisy_label"].to_numpy().max())) + 1
    merged = np.arange(k)
    merged[merges["label"].to_numpy()] = merges["merged_label"].to_numpy()
    pairs = split_pairs(truth)
    result = evaluate(scores["keep"].to_numpy(zero_copy_only=False), noise, merged, pairs)
    if do_sweep:
        table = sweep(summary["embeddings"], scores, noise, pairs, summary["tau_intra"])
        with atomic_path(clean_dir / "sweep.csv") as tmp:
            pacsv.write_csv(table, tmp)
        plot_sweep(table, clean_dir / "sweep.png")
        result["sweep"] = str(clean_dir / "sweep.csv")
    return result
