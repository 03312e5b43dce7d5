"""Throughput and memory of `faceclean extract` against a bare onnxruntime loop.

For each model, the same images are embedded in one run:
  * bare: the images already decoded and normalised in memory, onnxruntime called in a
    plain loop (no decoding, no writing) for every configuration — the model as shipped,
    and made-dynamic (or dynamic) at batch 1, 8, 32, 64 — each printed; the best is the
    ceiling;
  * faceclean: `extract()` from the files on disk to a Parquet store, which times the
    same configurations on its first batch and runs the fastest (printed).
Then the peak RSS of a whole `faceclean extract` process on 1x and 4x the images.

    python benchmarks/bench_extract.py [--images 1600] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from faceclean.data.datasets import open_dataset
from faceclean.data.extraction import extract, resolve_preprocessing
from faceclean.data.onnx_model import FaceModel
from faceclean.data.preprocess import load_tensor
from faceclean.data.synthetic import make_face_folder
from faceclean.demo import export_tiny_model

SHARED_MODEL = Path(__file__).resolve().parents[2] / "shared/models/mobilefacenet-foamliu.onnx"


def bare_loop(sess: ort.InferenceSession, name: str, x: np.ndarray, batch: int) -> float:
    t = time.perf_counter()
    for s in range(0, len(x), batch):
        sess.run(None, {name: x[s : s + batch]})
    return len(x) / (time.perf_counter() - t)


def measure(label: str, data: Path, model_path: Path, batch: int, preset: str | None, out: Path):
    """Every configuration as a bare loop (the images already decoded, no writing), the
    configuration extract's tuning chose, and extract's own rate against the best bare one."""
    model = FaceModel(model_path)
    spec = resolve_preprocessing(model, preset=preset)
    ds = open_dataset(data)
    x = np.stack([load_tensor(ds.read(i), spec)[0] for i in range(len(ds))])
    bare = {}
    for name, sess, fixed, run in model.configurations(len(x)):
        step = fixed or run or len(x)
        bare_loop(sess, model.input_name, x[: 4 * step], step)  # warm up
        bare[name] = max(bare_loop(sess, model.input_name, x, step) for _ in range(2))
    # The first run tunes (times every configuration on its first batch: a one-off cost,
    # printed apart); the second, with the tuned model, is extract's steady rate.
    tuned = FaceModel(model_path)
    t = time.perf_counter()
    result = extract(ds, tuned, out, preset=preset, batch_size=batch, overwrite=True, tune=True)
    first = time.perf_counter() - t
    t = time.perf_counter()
    extract(ds, tuned, out, preset=preset, batch_size=batch, overwrite=True)
    ours = len(ds) / (time.perf_counter() - t)
    best_name = max(bare, key=bare.get)
    print(f"\n{label}: {len(ds)} images, {model.height}x{model.width}, dim {model.dim}")
    for name, ips in sorted(bare.items(), key=lambda kv: -kv[1]):
        print(f"  bare onnxruntime loop, {name:<28} {ips:9.1f} img/s")
    print(
        f"  extract's choice on its first batch: {result.batch_choice} (first run with the "
        f"timing {first:.1f} s, {first - len(ds) / ours:.1f} s more than a tuned run)"
    )
    print(f"  faceclean extract (decode + model + write) {ours:9.1f} img/s")
    print(f"  ratio faceclean / best bare loop ({best_name}): {ours / bare[best_name]:.2f}")


def peak_rss_mb(data: Path, model: Path, out: Path, batch: int) -> float:
    code = (
        "import resource,sys;from faceclean.data.extraction import extract;"
        f"extract({str(data)!r},{str(model)!r},{str(out)!r},batch_size={batch},overwrite=True,"
        "chunk_size=1024);"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(res.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--images", type=int, default=1600)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        per_id = 20
        data = make_face_folder(tmp / "faces", args.images // per_id, per_id, fmt="jpg")
        dyn = export_tiny_model(tmp / "tiny.onnx", width=32)
        measure(
            "dynamic-batch TinyFaceNet (width 32)",
            data,
            dyn,
            args.batch_size,
            None,
            tmp / "a.parquet",
        )
        if SHARED_MODEL.is_file():
            measure(
                "fixed-batch-1 MobileFaceNet (shared model)",
                data,
                SHARED_MODEL,
                args.batch_size,
                "imagenet",
                tmp / "b.parquet",
            )
        else:
            print(f"\n(skipped the fixed-batch model: {SHARED_MODEL} not found)")
        data4 = make_face_folder(tmp / "faces4", 4 * args.images // per_id, per_id, fmt="jpg")
        one = peak_rss_mb(data, dyn, tmp / "m1.parquet", args.batch_size)
        four = peak_rss_mb(data4, dyn, tmp / "m4.parquet", args.batch_size)
        print(
            f"\npeak RSS of an extract process: {args.images} images {one:.0f} MB, "
            f"{4 * args.images} images {four:.0f} MB (ratio {four / one:.2f})"
        )


if __name__ == "__main__":
    main()
