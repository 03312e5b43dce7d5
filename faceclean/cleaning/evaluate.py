"""`faceclean evaluate-cleaning`: a clean's output scored against injected noise, and a
sweep of both thresholds written as a table and a precision-recall plot.

``sweep.csv`` and ``sweep.png`` go beside the clean's outputs: both are built under
temporary names and renamed together (the table last), an existing pair needs
``overwrite``, and a lock refuses a second writer (see :mod:`faceclean.outputs`)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from faceclean.cleaning.clean import read_clean_summary
from faceclean.cleaning.filter import filter_store
from faceclean.cleaning.merge import merge_classes
from faceclean.cleaning.noise import evaluate, split_pairs
from faceclean.data.store import read_parquet_columns
from faceclean.errors import FacecleanError
from faceclean.outputs import commit_files, tmp_sibling, writing

TAU_INTRA_SWEEP = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
TAU_INTER_SWEEP = (0.3, 0.4, 0.5, 0.55, 0.6, 0.62, 0.65, 0.7, 0.8, 0.9)


# What evaluate-cleaning reads of an inject-noise truth table.
TRUTH_COLUMNS = {
    "path": pa.string(),
    "true_label": pa.int64(),
    "noisy_label": pa.int64(),
    "noise": pa.string(),
}


def _aligned_noise(scores: pa.Table, truth: pa.Table, truth_path: Path) -> np.ndarray:
    """The noise kind of every scored row, from the truth; the truth must describe the
    store the clean read: same paths and, for each, the label the store files it under
    (another inject-noise run of the same store has the paths but other labels)."""
    t_paths = truth["path"].to_pylist()
    by_path = dict(zip(t_paths, truth["noise"].to_pylist(), strict=True))
    label_of = dict(zip(t_paths, truth["noisy_label"].to_pylist(), strict=True))
    paths, labels = scores["path"].to_pylist(), scores["label"].to_pylist()
    try:
        differ = sum(label_of[p] != y for p, y in zip(paths, labels, strict=True))
        noise = np.asarray([by_path[p] for p in paths])
    except KeyError as e:
        raise FacecleanError(
            f"path {e.args[0]!r} of the scores is not in the truth", truth_path
        ) from None
    if differ:
        raise FacecleanError(
            f"{differ} of {len(paths)} rows have another label in the truth than in the "
            "cleaned store: the truth of another inject-noise run?",
            truth_path,
        )
    return noise


def sweep(
    embeddings: list,
    scores: pa.Table,
    noise: np.ndarray,
    pairs: set,
    tau_intra: float,
    device: str = "auto",
    loo_below: int | None = None,
) -> pa.Table:
    """Quality at every threshold of the sweeps: filter sweep reuses the scores' D; merge
    sweep merges the centroids of the samples kept at ``tau_intra``."""
    d = scores["discriminability"].to_numpy(zero_copy_only=False)
    rows = []
    for t in TAU_INTRA_SWEEP:
        keep = ~(d < t)
        rows.append({"stage": "filter", "threshold": t, **evaluate(keep, noise)})
    fr = filter_store(
        embeddings, tau_intra, None, loo_below=loo_below, device=device, keep_class_sums=False
    )
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
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)


def evaluate_clean_dir(
    clean_dir: str | Path,
    truth_path: str | Path,
    do_sweep: bool = False,
    overwrite: bool = False,
) -> dict:
    """Score ``faceclean clean`` outputs in ``clean_dir`` against an inject-noise truth.

    Returns the metrics of :func:`faceclean.cleaning.noise.evaluate`; with ``do_sweep`` also writes
    ``sweep.csv`` and ``sweep.png`` (precision/recall/F1 against each threshold) there.
    """
    clean_dir, truth_path = Path(clean_dir), Path(truth_path)
    summary = read_clean_summary(clean_dir)
    if not truth_path.is_file():
        raise FacecleanError("truth table not found", truth_path)
    csv_path, png_path = clean_dir / "sweep.csv", clean_dir / "sweep.png"
    with contextlib.ExitStack() as stack:
        if do_sweep:  # checked and locked before any work
            stack.enter_context(
                writing(csv_path, overwrite=overwrite, inputs=[truth_path], companions=[png_path])
            )
        return _evaluate(clean_dir, truth_path, summary, csv_path if do_sweep else None)


def _evaluate(clean_dir: Path, truth_path: Path, summary: dict, csv_path: Path | None) -> dict:
    scores = pq.read_table(clean_dir / "scores.parquet")
    truth = read_parquet_columns(truth_path, TRUTH_COLUMNS, "truth table of `inject-noise`")
    noise = _aligned_noise(scores, truth, truth_path)
    merges = pq.read_table(clean_dir / "merges.parquet")
    k = int(max(merges["label"].to_numpy().max(), truth["noisy_label"].to_numpy().max())) + 1
    merged = np.arange(k)
    merged[merges["label"].to_numpy()] = merges["merged_label"].to_numpy()
    pairs = split_pairs(truth)
    result = evaluate(scores["keep"].to_numpy(zero_copy_only=False), noise, merged, pairs)
    if csv_path is not None:
        table = sweep(
            summary["embeddings"],
            scores,
            noise,
            pairs,
            summary["tau_intra"],
            loo_below=summary.get("loo_below"),
        )
        png_path = csv_path.with_name("sweep.png")
        csv_tmp, png_tmp = tmp_sibling(csv_path), tmp_sibling(png_path)
        try:
            pacsv.write_csv(table, csv_tmp)
            plot_sweep(table, png_tmp)
            commit_files([(png_tmp, png_path), (csv_tmp, csv_path)])
        finally:
            csv_tmp.unlink(missing_ok=True)
            png_tmp.unlink(missing_ok=True)
        result["sweep"] = str(csv_path)
    return result
