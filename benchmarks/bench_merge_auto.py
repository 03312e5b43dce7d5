"""`--tau-inter auto` and the look-alike guard against the paper's 0.62, on real faces.

celeb_dev embedded with the shared MobileFaceNet (cached outside the repository, see
real_faces.py) with 10 % of the identities split over two labels, plus look-alike flips
and distractors at 15 % of the rows; the filter at ``--tau-intra auto`` first (scored
against identity groups merged beforehand, as `clean` does), then each merge on the same
kept centroids. Seeds 0-4; merge precision and recall are pairwise
against the true split pairs.

    OMP_NUM_THREADS=1 python benchmarks/bench_merge_auto.py [--seeds 0 1 2 3 4]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from real_faces import celeb_dev_store  # noqa: E402

from faceclean.cleaning.filter import filter_store  # noqa: E402
from faceclean.cleaning.merge import merge_classes  # noqa: E402
from faceclean.cleaning.merge_auto import (  # noqa: E402
    identity_groups,
    resolve_merge_thresholds,
)
from faceclean.cleaning.noise import evaluate, inject_noise, split_pairs  # noqa: E402


def run(table, seed: int, tmp: Path) -> dict:
    ns = inject_noise(table, 0, 0, 0.1, seed, lookalike=0.075, distractors=0.075)
    path = tmp / "noisy.parquet"
    pq.write_table(ns.table, path)
    noise, pairs = ns.truth["noise"].to_numpy(zero_copy_only=False), split_pairs(ns.truth)
    floors = {"min_cos_pos": "auto", "min_norm": "auto"}
    groups = identity_groups(path, "auto", "auto", **floors)  # as `clean` does with auto
    fr = filter_store(path, "auto", min_cos_pos="auto", min_norm="auto", same_identity=groups)
    keep = fr.scores["keep"].to_numpy(zero_copy_only=False)
    tau, ratio, _ = resolve_merge_thresholds(path, keep, len(fr.kept_counts), "auto", "auto")
    out = {}
    for name, t, r in (
        ("paper 0.62", 0.62, None),
        ("auto, no guard", tau, None),
        ("auto + guard", tau, ratio),
        ("0.62 + guard", 0.62, ratio),
    ):
        mr = merge_classes(fr.kept_sums, fr.kept_counts, t, min_ratio=r)
        m = evaluate(keep, noise, mr.merged_label, pairs)
        out[name] = {**m, "tau": t, "ratio": r, "true_pairs": len(pairs)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = ap.parse_args()
    table = pq.read_table(celeb_dev_store())
    with tempfile.TemporaryDirectory() as d:
        runs = [run(table, s, Path(d)) for s in args.seeds]
    print(f"celeb_dev, 10 % split + 15 % look-alikes/distractors, seeds {args.seeds}")
    print(f"true split pairs per seed: {[r['paper 0.62']['true_pairs'] for r in runs]}")
    print(f"{'merge':<16}{'precision':>16}{'recall':>16}  pairs merged  tau_inter/ratio")
    for name in runs[0]:
        p = np.array([r[name]["merge_precision"] for r in runs])
        rec = np.array([r[name]["merge_recall"] for r in runs])
        merged = [r[name]["merge_pairs"] for r in runs]
        th = " ".join(
            f"{r[name]['tau']:.2f}/{r[name]['ratio']:.2f}"
            if r[name]["ratio"] is not None
            else f"{r[name]['tau']:.2f}"
            for r in runs
        )
        print(
            f"{name:<16}{p.mean():>9.3f} ± {p.std(ddof=1):.3f}{rec.mean():>9.3f} ± "
            f"{rec.std(ddof=1):.3f}  {merged}  {th}"
        )


if __name__ == "__main__":
    main()
