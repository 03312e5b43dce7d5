"""Per-class memory of filter and merge, counted in K x d float32 arrays, and projected.

The per-class state grows with the classes K, not the rows. This measures it with
tracemalloc (NumPy reports its allocations to it) on a store of K classes, one image each,
in small row groups read 256 rows at a time (so a batch weighs nothing): over class_sums,
the filter's setup and first scored batch (every per-class array of the pass is live then),
and a whole merge_classes at a smaller K (its K x K search is the slow part). Each is
measured at K and 2K, both past 32K classes where the similarity block buffers stop growing
(~256 MB for a product block, ~1 GB with merge's top-k partition, whatever K): the slope,
divided by d x 4 bytes, is the number of float32 K x d arrays, projected to WebFace42M's
2M classes x 512-d.

    nice -n 10 python benchmarks/bench_class_state.py [--classes 100000] [--merge-classes 40000]
"""

from __future__ import annotations

import argparse
import tempfile
import tracemalloc
from pathlib import Path

from bench_scale import write_store

from faceclean.cleaning.filter import class_sums, score_batches
from faceclean.cleaning.merge import merge_classes


def filter_arrays(store: Path, k: int, dim: int) -> float:
    """class_sums + the kept-sums copy + the filter's index and one scored batch."""
    tracemalloc.start()
    sums, counts = class_sums(store, batch_rows=256)
    kept = sums.copy()  # the filter's kept sums (for merge), live for the whole pass
    batches = score_batches(store, sums, counts, batch_rows=256)
    next(batches)
    peak = tracemalloc.get_traced_memory()[1]
    batches.close()
    tracemalloc.stop()
    del kept
    return peak


def merge_arrays(store: Path, k: int, dim: int) -> float:
    sums, counts = class_sums(store, batch_rows=256)
    tracemalloc.start()
    merge_classes(sums, counts, 0.62)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def slope(measure, k: int, dim: int, tmp: Path) -> float:
    """float32 K x d arrays per class: (peak(2K) - peak(K)) / (K x d x 4)."""
    peaks = []
    for kk in (k, 2 * k):
        store = tmp / f"{measure.__name__}-{kk}.parquet"
        write_store(store, kk, kk, dim, row_group=1024)
        peaks.append(measure(store, kk, dim))
    return (peaks[1] - peaks[0]) / (k * dim * 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--classes", type=int, default=100_000)
    ap.add_argument("--merge-classes", type=int, default=40_000)
    ap.add_argument("--dim", type=int, default=512)
    args = ap.parse_args()
    d, kf, km = args.dim, args.classes, args.merge_classes
    with tempfile.TemporaryDirectory() as tmp:
        f = slope(filter_arrays, kf, d, Path(tmp))
        m = slope(merge_arrays, km, d, Path(tmp))
    unit = 2e6 * 512 * 4 / 1e9
    print(f"one float32 K x d array at 2M x 512: {unit:.2f} GB")
    print(f"filter (K={kf:,}/{2 * kf:,}, d={d}): {f:.2f} arrays -> {f * unit:.1f} GB at 2M x 512")
    print(
        f"merge (K={km:,}/{2 * km:,}, d={d}): {m:.2f} arrays, + the filter's 2 "
        "(class and kept sums, "
        f"live in clean): {(m + 2) * unit:.1f} GB at 2M x 512"
    )
    print("(plus the fixed similarity buffers, ~0.3 GB filter, ~1 GB merge, and O(K) scalars)")


if __name__ == "__main__":
    main()
