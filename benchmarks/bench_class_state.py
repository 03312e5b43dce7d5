"""Per-class memory of filter, merge and clean, counted in K x d float32 arrays, projected.

The per-class state grows with the classes K, not the rows. Counted with tracemalloc
(NumPy reports its allocations to it) on a store of K classes, one image each, read 16
rows at a time (a batch, and the similarity block of 16 x K, weigh nothing next to K x d):

* filter: the real ``filter_store`` as ``clean`` runs it (``keep_class_sums=False``), up to
  its first scored block, where every per-class array of the pass is live (the pass is
  K x K x d; the rest of it allocates per batch only, and after it the dropped rows are
  subtracted from the class sums in place);
* merge: a whole ``merge_classes`` at a smaller K, above the kept sums it is given.

Each at K and 2K: the slope, divided by d x 4 bytes, is the number of float32 K x d arrays,
projected to WebFace42M's 2M classes x 512-d. ``--rss-classes K`` also runs a real
``clean`` (and, with ``--old-tree DIR``, the same clean with another checkout's code) in a
child process on K classes x 2 images at --rss-dim and reports its peak RSS.

    nice -n 10 python benchmarks/bench_class_state.py --dim 128 --classes 60000 \\
        --merge-classes 33000 [--rss-classes 20000 --rss-dim 512 --old-tree /work/main]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path

from bench_scale import write_store

from faceclean.cleaning.filter import class_sums, filter_store
from faceclean.cleaning.merge import merge_classes


class _FirstBlock(Exception):
    pass


def _stop(rows, sims):
    raise _FirstBlock


def filter_arrays(store: Path, k: int, dim: int) -> float:
    """filter_store's peak up to its first scored block (clean's settings)."""
    out = store.with_suffix(".scores.parquet")
    tracemalloc.start()
    try:
        filter_store(store, 0.3, out, batch_rows=16, keep_class_sums=False, on_block=_stop)
    except _FirstBlock:
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def merge_arrays(store: Path, k: int, dim: int) -> float:
    sums, counts = class_sums(store, batch_rows=256)
    tracemalloc.start()
    merge_classes(sums, counts, 0.62)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def slope(measure, k: int, dim: int, tmp: Path) -> float:
    """float32 K x d arrays per class: (peak(2K) - peak(K)) / (K x d x 4). A first run at
    a small K is discarded: it imports torch and fills caches inside the trace, which would
    inflate peak(K) alone."""
    peaks = []
    for kk in (64, k, 2 * k):
        store = tmp / f"{measure.__name__}-{kk}.parquet"
        write_store(store, kk, kk, dim, row_group=1024)
        peaks.append(measure(store, kk, dim))
    return (peaks[2] - peaks[1]) / (k * dim * 4)


_CLEAN = """
import resource, sys
from faceclean.cleaning.clean import clean
clean(sys.argv[1], sys.argv[2], 0.3, 0.62, overwrite=True)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def clean_rss(store: Path, out: Path, tree: str) -> float:
    """Peak RSS (MB) of a real clean in a child process running ``tree``'s faceclean."""
    env = {**os.environ, "PYTHONPATH": tree}
    cmd = [sys.executable, "-c", _CLEAN, str(store), str(out)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, cwd=tree)
    return float(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--classes", type=int, default=100_000)
    ap.add_argument("--merge-classes", type=int, default=40_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--rss-classes", type=int, default=0, help="also a real clean (K x 2 rows)")
    ap.add_argument("--rss-dim", type=int, default=512)
    ap.add_argument("--old-tree", help="checkout whose clean to run beside this one's")
    ap.add_argument("--stages", default="filter,merge", help="of filter,merge")
    args = ap.parse_args()
    d, kf, km = args.dim, args.classes, args.merge_classes
    with tempfile.TemporaryDirectory() as tmp:
        stages = args.stages.split(",")
        nan = float("nan")
        f = slope(filter_arrays, kf, d, Path(tmp)) if "filter" in stages else nan
        m = slope(merge_arrays, km, d, Path(tmp)) if "merge" in stages else nan
        rss = {}
        if args.rss_classes:
            store = Path(tmp) / "rss.parquet"
            write_store(store, 2 * args.rss_classes, args.rss_classes, args.rss_dim)
            trees = {"this": str(Path(__file__).resolve().parents[1])}
            if args.old_tree:
                trees["old"] = str(Path(args.old_tree).resolve())
            for name, tree in trees.items():
                rss[name] = clean_rss(store, Path(tmp) / f"clean-{name}", tree)
    unit = 2e6 * 512 * 4 / 1e9
    print(f"one float32 K x d array at 2M x 512: {unit:.2f} GB")
    print(f"filter (K={kf:,}/{2 * kf:,}, d={d}): {f:.2f} arrays -> {f * unit:.1f} GB at 2M x 512")
    print(
        f"merge (K={km:,}/{2 * km:,}, d={d}): {m:.2f} arrays, + the kept sums it merges "
        f"(clean holds no other): {(m + 1) * unit:.1f} GB at 2M x 512"
    )
    print(f"clean: the larger, {max(f, m + 1) * unit:.1f} GB at 2M x 512")
    print("(plus the fixed similarity buffers, ~0.3 GB filter, ~1 GB merge, and O(K) scalars)")
    for name, mb in rss.items():
        print(
            f"peak RSS of a real clean, {args.rss_classes:,} classes x 2 images x "
            f"{args.rss_dim}-d "
            f"({name} tree): {mb:.0f} MB"
        )


if __name__ == "__main__":
    main()
