"""Speed and memory of `faceclean filter` / `merge` on synthetic clustered embeddings.

In one run, on the same data:
  * floor: 2*N*K*d FLOPs / this machine's float32 matrix-multiply rate (measured now);
  * numpy: a straightforward implementation (chunked X @ C.T, own cosine, top-2 by argmax);
  * faceclean: `filter_store` (streams the Parquet store twice: sums, then scores);
  * merge: `merge_classes` over the K centroids;
then peak RSS of a filter process at 1x and 4x the rows, and a projection for MS1MV2.

    python benchmarks/bench_clean.py [--rows 200000] [--classes 20000] [--dim 512]
    (the issue's size: --rows 1000000; it takes a few minutes per method on 2 cores)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from faceclean.cleaning.filter import class_sums, filter_store, normalise_rows
from faceclean.cleaning.merge import merge_classes
from faceclean.data.store import embedding_schema, embedding_table, iter_row_groups


def write_synthetic(path: Path, rows: int, classes: int, dim: int, seed: int = 0) -> None:
    """Clustered unit vectors, written row group by row group (never all in memory)."""
    rng = np.random.default_rng(seed)
    centres = normalise_rows(rng.standard_normal((classes, dim)).astype(np.float32))
    schema = embedding_schema(dim)
    with pq.ParquetWriter(path, schema) as w:
        for s in range(0, rows, 65536):
            n = min(65536, rows - s)
            y = rng.integers(0, classes, n)
            x = centres[y] + 0.6 * rng.standard_normal((n, dim), np.float32) / np.sqrt(dim)
            x = normalise_rows(x)
            w.write_table(
                embedding_table(
                    [f"i{s + i}" for i in range(n)], y, [str(v) for v in y], x, np.ones(n), schema
                )
            )


def matmul_flops(dim: int, classes: int) -> float:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4096, dim), np.float32)
    b = rng.standard_normal((dim, classes), np.float32)
    a @ b
    t = time.perf_counter()
    for _ in range(3):
        a @ b
    return 3 * 2 * 4096 * dim * classes / (time.perf_counter() - t)


def numpy_filter(path: Path, tau: float) -> int:
    sums, counts = class_sums(path)
    cent = normalise_rows(sums).astype(np.float32)
    kept = 0
    for batch in iter_row_groups(pq.ParquetFile(path), ["label", "embedding"], 8192):
        y = batch.column("label").to_numpy()
        x = batch.column("embedding").flatten().to_numpy().reshape(len(y), -1)
        sims = x @ cent.T
        pos = sims[np.arange(len(y)), y].copy()
        sims[np.arange(len(y)), y] = -np.inf
        neg = sims.max(1)
        kept += int((pos / neg >= tau).sum())
    return kept


def peak_rss_mb(path: Path) -> float:
    code = (
        "import resource;from faceclean.cleaning.filter import filter_store;"
        f"filter_store({str(path)!r},0.3,{str(path) + '.scores'!r},overwrite=True);"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--classes", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument(
        "--rss-rows",
        type=int,
        default=250_000,
        help="rows for the 1x memory run (4x is also run), with 2000 classes",
    )
    args = ap.parse_args()
    n, k, d = args.rows, args.classes, args.dim
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = tmp / "emb.parquet"
        write_synthetic(path, n, k, d)
        flops = matmul_flops(d, k)
        floor = 2 * n * k * d / flops
        t = time.perf_counter()
        kept_np = numpy_filter(path, 0.3)
        t_np = time.perf_counter() - t
        t = time.perf_counter()
        r = filter_store(path, 0.3, tmp / "scores.parquet", loo_below=0)
        t_fc = time.perf_counter() - t
        t = time.perf_counter()
        m = merge_classes(r.kept_sums, r.kept_counts, 0.62)
        t_merge = time.perf_counter() - t
        print(f"filter, N={n:,} K={k:,} d={d}  (matmul rate {flops / 1e9:.0f} GFLOP/s)")
        print(f"  floor 2NKd/rate      {floor:8.1f} s")
        print(
            f"  numpy chunked        {t_np:8.1f} s  ({t_np / floor:.2f}x floor), kept {kept_np:,}"
        )
        print(
            f"  faceclean filter     {t_fc:8.1f} s  ({t_fc / floor:.2f}x floor, "
            f"{t_np / t_fc:.2f}x faster than numpy), kept {r.num_kept:,}"
        )
        print(f"merge over {k:,} centroids: {t_merge:.2f} s, {len(m.groups)} groups")
        proj = t_fc / (n * k * d) * 5.8e6 * 85_000 * 512
        print(f"projected MS1MV2 filter (5.8M x 85K x 512) on this CPU: {proj / 3600:.1f} h")
        small, big = tmp / "s.parquet", tmp / "b.parquet"
        write_synthetic(small, args.rss_rows, 2000, d, seed=1)
        write_synthetic(big, 4 * args.rss_rows, 2000, d, seed=1)
        one, four = peak_rss_mb(small), peak_rss_mb(big)
        print(
            f"peak RSS of a filter process (K=2000, d={d}): {args.rss_rows:,} rows {one:.0f} MB,"
            f" {4 * args.rss_rows:,} rows {four:.0f} MB (ratio {four / one:.2f})"
        )


if __name__ == "__main__":
    main()
