"""What `auto` costs: `clean` with the paper's fixed thresholds against
`clean --tau-intra auto --tau-inter auto` on the same synthetic clustered store, in one run.

auto adds streaming passes (the D histograms, a lenient first pass and half sums for the
identity groups, half sums for the merge); this prints both wall times and their ratio,
median and spread over repeats.

    OMP_NUM_THREADS=1 python benchmarks/bench_auto_cost.py [--rows 100000] [--classes 5000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_clean import write_synthetic  # noqa: E402

from faceclean.cleaning.clean import clean  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--classes", type=int, default=5_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        store = Path(d) / "e.parquet"
        write_synthetic(store, args.rows, args.classes, args.dim)
        times = {"fixed": [], "auto": []}
        for _ in range(args.repeats):
            for name, thresholds in (("fixed", (0.3, 0.62)), ("auto", ("auto", "auto"))):
                t0 = time.perf_counter()
                clean(store, Path(d) / f"c-{name}", *thresholds, overwrite=True, device="cpu")
                times[name].append(time.perf_counter() - t0)
    ratio = np.array(times["auto"]) / np.array(times["fixed"])
    print(f"{args.rows:,} rows, {args.classes:,} classes, dim {args.dim}, {args.repeats} repeats")
    for name, t in times.items():
        print(f"clean {name:<6} median {np.median(t):.2f} s (min {min(t):.2f}, max {max(t):.2f})")
    spread = f"min {ratio.min():.2f}, max {ratio.max():.2f}"
    print(f"auto / fixed: median {np.median(ratio):.2f} ({spread})")


if __name__ == "__main__":
    main()
