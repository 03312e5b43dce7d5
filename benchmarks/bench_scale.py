"""Cleaning at MS1MV2 / WebFace42M scale: time against the matrix-product floor, peak RSS.

A face-like synthetic store (float16, rows in class order like a real extraction): each
class a random unit centre, each image sqrt(0.58) centre + sqrt(0.42) unit noise, so
same-class cosine ~0.58 and different-class ~0 (the shared MobileFaceNet on celeb_dev:
0.58 / 0.007); 2% of the rows mislabelled, 0.5% junk (far from every class) and 1% planted
near-duplicates (cosine ~0.995), 70% inside a class and 30% across classes.

Each stage runs in its own process (peak RSS is that process's ru_maxrss), in one run:
  * floor: 2 N K d FLOPs at this machine's float32 matrix-product rate, measured now;
  * filter (`filter_store`), merge (`merge_classes` of the kept sums), dedup
    (`find_duplicates`, exact), overlap (`find_overlap --image-tau` against an
    evaluation store of --eval-rows images), clean and clean --dedup (`clean`);
then a projection table (multiply-add counts, assumptions printed) to MS1MV2 at 512-d and
WebFace42M on one and on 8 GPUs.

    nice -n 10 python benchmarks/bench_scale.py --rows 200000 --classes 85000 --dim 128
    (stages: --stages filter,merge,dedup,overlap,clean,clean-dedup; --keep DIR keeps the store)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from bench_clean import matmul_flops  # the float32 product rate, measured now

from faceclean.data.store import embedding_schema, embedding_table

STAGES = ("filter", "merge", "dedup", "overlap", "clean", "clean-dedup")
DEDUP_TAU = 0.98


def face_like_batch(rng, centres: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Unit rows of the given labels: same-class cosine ~0.58, other classes ~0, with 2%
    mislabelled, 0.5% junk and 1% near-copies of another row of the batch."""
    n, dim = len(labels), centres.shape[1]
    noise = rng.standard_normal((n, dim), np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    true = labels.copy()
    wrong = rng.random(n) < 0.02
    true[wrong] = rng.integers(0, len(centres), int(wrong.sum()))
    x = np.sqrt(0.58, dtype=np.float32) * centres[true] + np.sqrt(0.42, dtype=np.float32) * noise
    junk = rng.random(n) < 0.005
    x[junk] = rng.standard_normal((int(junk.sum()), dim), np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    copies = rng.choice(n, 2 * (n // 200), replace=False).reshape(-1, 2)  # 1% of the rows
    a, b = copies[:, 0], copies[:, 1]
    near = rng.random(len(a)) < 0.7  # 70% a neighbour in store order: usually one class
    b = np.where(near, np.minimum(a + 1, n - 1), b)
    jitter = 0.1 * rng.standard_normal((len(a), dim), np.float32) / np.sqrt(dim)
    x[b] = x[a] + jitter
    x[b] /= np.linalg.norm(x[b], axis=1, keepdims=True)
    return x


def write_store(
    path: Path, rows: int, classes: int, dim: int, seed: int = 0, row_group: int = 65536
) -> None:
    """A float16 face-like store of ``rows`` rows in class order, written row group by row
    group (the full N x d is never in memory). Class centres depend on ``dim`` only, so a
    second store of other images (another ``seed``) shows the same people."""
    centres = np.random.default_rng(12345).standard_normal((classes, dim), np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    # Every class present (as in a real set), the rest of the rows drawn at random.
    first = np.arange(min(classes, rows))
    labels = np.sort(np.concatenate([first, rng.integers(0, classes, rows - len(first))]))
    schema = embedding_schema(dim, "float16", {"synthetic": "bench_scale", "seed": seed})
    with pq.ParquetWriter(path, schema) as w:
        for s in range(0, rows, row_group):
            y = labels[s : s + row_group]
            x = face_like_batch(rng, centres, y)
            names = [f"id{v}" for v in y.tolist()]
            paths = [f"{names[i]}/{s + i}.jpg" for i in range(len(y))]
            w.write_table(embedding_table(paths, y, names, x, np.ones(len(y)), schema))


def run_stage(stage: str, store: Path, eval_store: Path, work: Path) -> dict:
    """One stage in this process: its seconds and a few counts."""
    from faceclean.cleaning.clean import clean
    from faceclean.cleaning.dedup import find_duplicates
    from faceclean.cleaning.filter import class_sums, filter_store
    from faceclean.cleaning.merge import merge_classes
    from faceclean.cleaning.overlap import find_overlap

    t = time.perf_counter()
    if stage == "filter":
        r = filter_store(store, 0.3, work / "scores.parquet", overwrite=True)
        info = {"kept": r.num_kept}
    elif stage == "merge":
        sums, counts = class_sums(store)  # merge alone: its input, timed apart
        t = time.perf_counter()
        m = merge_classes(sums, counts, 0.62)
        info = {"groups": len(m.groups)}
    elif stage == "dedup":
        d = find_duplicates(store, DEDUP_TAU, spill_dir=work)
        info = {k: d.summary[k] for k in ("duplicate_groups", "images_in_duplicate_groups")}
    elif stage == "overlap":
        o = find_overlap(store, eval_store, 0.62, image_tau=DEDUP_TAU)
        info = {"image_pairs": o.summary["image_pairs"]}
    else:
        dedup = DEDUP_TAU if stage == "clean-dedup" else None
        c = clean(store, work / stage, 0.3, 0.62, dedup=dedup, overwrite=True)
        info = {"clean_rows": c.num_clean_rows}
    return {"seconds": time.perf_counter() - t, **info}


def measured(stage: str, store: Path, eval_store: Path, work: Path) -> dict:
    """Run a stage in a child process; its result with the child's peak RSS (MB) and its
    whole CPU time (user + system, s: on a shared machine less load-dependent than the
    wall time, which the stage itself reports as ``seconds``)."""
    cmd = [sys.executable, __file__, "--_stage", stage, str(store), str(eval_store), str(work)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"stage {stage} failed (status {status})")
    return json.loads(out.strip().splitlines()[-1]) | {
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "cpu_s": usage.ru_utime + usage.ru_stime,
    }


def projection(t_floor_rate: float, gpu_tflops: float, dim_ms1: int) -> list[str]:
    """Multiply-add counts of a clean --dedup at the two target shapes, in hours."""
    lines = [
        "projection (multiply-adds of a clean --dedup: one N x K x d product shared by the",
        "filter and the duplicate search, merge's K x K x d, and N x d x 100 for the pairs",
        "inside classes; a GPU at 50% of its float32 peak, 8 GPUs sharing the rows linearly;",
        f"this CPU at the float32 rate measured now, {t_floor_rate / 1e9:.0f} GFLOP/s):",
        f"  {'target':28s} {'MACs':>9s} {'this CPU':>10s} {'1 GPU':>9s} {'8 GPUs':>9s}",
    ]
    for name, n, k, d in (
        ("MS1MV2 5.8M x 85K x 512", 5.8e6, 85e3, dim_ms1),
        ("WebFace42M 42M x 2M x 512", 42e6, 2e6, 512),
    ):
        macs = n * k * d + k * k * d + n * d * 100
        cpu = 2 * macs / t_floor_rate / 3600
        gpu = 2 * macs / (0.5 * gpu_tflops * 1e12) / 60
        lines.append(f"  {name:28s} {macs:9.2e} {cpu:9.1f}h {gpu:6.1f}min {gpu / 8:6.1f}min")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--classes", type=int, default=85_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--eval-rows", type=int, default=13_000, help="evaluation store (LFW: 13K)")
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--gpu-tflops", type=float, default=60.0, help="float32 peak (H100: ~60)")
    ap.add_argument("--keep", type=Path, help="folder to keep (and reuse) the stores in")
    ap.add_argument(
        "--repeats", type=int, default=1, help="clean / clean-dedup pairs run alternately"
    )
    ap.add_argument("--_stage", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._stage:
        stage, store, eval_store, work = args._stage
        print(json.dumps(run_stage(stage, Path(store), Path(eval_store), Path(work))))
        return
    n, k, d = args.rows, args.classes, args.dim
    with tempfile.TemporaryDirectory(dir=args.keep) as tmp:
        folder = args.keep or Path(tmp)
        store = folder / f"scale-{n}-{k}-{d}.parquet"
        eval_store = folder / f"scale-eval-{args.eval_rows}-{d}.parquet"
        t = time.perf_counter()
        if not store.exists():
            write_store(store, n, k, d)
        if not eval_store.exists():  # new images (seed 1) of the first training classes
            write_store(eval_store, args.eval_rows, max(1, args.eval_rows // 20), d, seed=1)
        print(f"stores written in {time.perf_counter() - t:.0f} s")
        rate = matmul_flops(d, min(k, 20_000))
        floor = 2 * n * k * d / rate
        print(f"N={n:,} K={k:,} d={d}, float16 store; float32 matmul {rate / 1e9:.0f} GFLOP/s")
        print(f"floor (one N x K x d product): {floor:.1f} s")
        print(f"  {'stage':12s} {'seconds':>8s} {'x floor':>8s} {'CPU s':>8s} {'peak RSS':>9s}")
        results = {}
        for stage in args.stages.split(","):
            r = measured(stage, store, eval_store, Path(tmp))
            results[stage] = r
            extra = {x: v for x, v in r.items() if x not in ("seconds", "peak_rss_mb", "cpu_s")}
            print(
                f"  {stage:12s} {r['seconds']:8.1f} {r['seconds'] / floor:8.2f} "
                f"{r['cpu_s']:8.1f} {r['peak_rss_mb']:7.0f}MB  {extra}",
                flush=True,
            )
        if "clean" in results and "clean-dedup" in results:
            pairs = [(results["clean"], results["clean-dedup"])]
            for _ in range(args.repeats - 1):  # alternated: load drifts on a shared machine
                pair = tuple(measured(s, store, eval_store, Path(tmp)) for s in STAGES[4:])
                print(
                    f"  repeat: clean {pair[0]['seconds']:.1f} s ({pair[0]['cpu_s']:.1f} CPU s),"
                    f" clean-dedup {pair[1]['seconds']:.1f} s ({pair[1]['cpu_s']:.1f} CPU s)",
                    flush=True,
                )
                pairs.append(pair)
            t = [cd["seconds"] / c["seconds"] for c, cd in pairs]
            u = [cd["cpu_s"] / c["cpu_s"] for c, cd in pairs]
            m = [cd["peak_rss_mb"] / c["peak_rss_mb"] for c, cd in pairs]
            print(f"clean --dedup / clean over {len(pairs)} alternated pair(s):")
            for name, ratios in (("wall time", t), ("CPU time", u), ("peak RSS", m)):
                print(
                    f"  {name:9s} "
                    + ", ".join(f"{x:.2f}x" for x in ratios)
                    + f"  (median {np.median(ratios):.2f}x, range {min(ratios):.2f}-"
                    f"{max(ratios):.2f}x)"
                )
        for line in projection(rate, args.gpu_tflops, 512):
            print(line)


if __name__ == "__main__":
    main()
