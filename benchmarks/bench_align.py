"""Throughput of `faceclean align` against a bare decode + detect loop, on the same photos.

The photos are dealt into blocks; each block is run three ways, in an order that rotates
from block to block (so a machine whose load drifts hurts each the same):
  * bare: for each photo, PIL open + EXIF turn + RGB, then the detector (no checks,
    warping, writing or record) -- what a user's own loop would do;
  * align --no-refine: decode, detect, check, warp, write the crop and the record row;
  * align --refine: the same plus the second detector call on each face warped upright.
Each runs on one thread (``--workers 1``, onnxruntime with 1 intra-op thread), or with
``--workers N`` on N threads (the bare loop then on an N-thread pool). Reported: the rate of
each, per photo, and the ratios align/bare within each block (median, IQR and range) of
wall time and of the process's CPU time (all threads): on a shared machine the CPU time is
the steadier measure, since time other processes take is not counted. Also the refine cost.

    python benchmarks/bench_align.py [--photos 240] [--blocks 6] [--repeats 2] [--workers 1]

DATA defaults to ../shared/data/celeb_dev_raw (whole CelebA photos, ~1-4 Mpx JPEGs); where
it is missing, ORL faces pasted into 640x480 scenes are made.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from faceclean.data.align import affine_warp, align
from faceclean.data.detectors import FaceDetector

SHARED = Path(__file__).resolve().parents[2] / "shared"
YUNET = SHARED / "models/face_detection_yunet_2026may.onnx"
ORL = SHARED / "data/orl_faces"
RAW = SHARED / "data/celeb_dev_raw"


def make_scenes(folder: Path, n: int, seed: int = 0) -> None:
    """``n`` ORL faces pasted at random places, scales and tilts into 640x480 JPEGs."""
    rng = np.random.default_rng(seed)
    crops = sorted(ORL.glob("s*/*.pgm"))
    for k in range(n):
        f = crops[k % len(crops)]
        crop = Image.open(f).convert("RGB")
        scale, angle = rng.uniform(1.0, 2.5), np.deg2rad(rng.uniform(-20, 20))
        lin = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        m = np.hstack([lin, rng.uniform([40, 40], [400, 200])[:, None]])
        bg = Image.fromarray(rng.uniform(0, 255, (6, 8, 3)).astype(np.uint8))
        scene = bg.resize((640, 480), Image.BICUBIC)
        mask = affine_warp(Image.new("L", crop.size, 255), m, (640, 480))
        scene.paste(affine_warp(crop, m, (640, 480)), (0, 0), mask)
        out = folder / f.parent.name / f"{k}.jpg"
        out.parent.mkdir(parents=True, exist_ok=True)
        scene.save(out, quality=92)


def pick_photos(data: Path, folder: Path, n: int, blocks: int) -> list[Path]:
    """Links to ``n`` photos of ``data`` spread over its identities, dealt into ``blocks``
    folders ``folder/block-K/<identity>/<photo>``; returns the block folders."""
    files = sorted(p for p in data.glob("*/*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    step = max(1, len(files) // n)
    for k, f in enumerate(files[::step][:n]):
        dst = folder / f"block-{k % blocks}" / f.parent.name
        dst.mkdir(parents=True, exist_ok=True)
        (dst / f.name).symlink_to(f)
    return sorted(folder.iterdir())


def bare(det: FaceDetector, paths: list[Path], workers: int) -> int:
    """Open + EXIF turn + RGB + detect each photo; returns the photos with a face."""

    def one(p: Path) -> int:
        with Image.open(p) as im:
            return len(det.detect(ImageOps.exif_transpose(im).convert("RGB"), 0.6)) > 0

    with ThreadPoolExecutor(workers) as pool:
        return sum(pool.map(one, paths))


def run_one(name: str, det: FaceDetector, block: Path, out: Path, workers: int) -> None:
    if name == "bare":
        bare(det, sorted(block.glob("*/*")), workers)
    else:
        align(block, out, det, refine=name == "refine", workers=workers)


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads) of ``fn()``."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def _spread(values: list[float]) -> str:
    q1, q2, q3 = np.percentile(values, [25, 50, 75])
    return f"median {q2:.3f} (IQR {q1:.3f}-{q3:.3f}, range {min(values):.3f}-{max(values):.3f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=240)
    ap.add_argument("--blocks", type=int, default=3, help="photos are timed in this many blocks")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--data", type=Path, default=RAW)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        if args.data.is_dir():
            blocks = pick_photos(args.data, raw, args.photos, args.blocks)
            what = args.data.name
        else:
            make_scenes(raw / "block-0", args.photos)
            blocks, what = [raw / "block-0"], "ORL faces in 640x480 scenes"
        det = FaceDetector(YUNET, device="cpu", threads=1)
        n = sum(1 for b in blocks for _ in b.glob("*/*"))
        print(f"{n} photos of {what} in {len(blocks)} blocks; {det.kind} on {det.providers[0]}")
        print(f"{args.workers} worker(s), 1 onnxruntime thread each; {args.repeats} repeats\n")
        names = ["bare", "no-refine", "refine"]
        wall: dict[str, list[float]] = {k: [] for k in names}
        cpu: dict[str, list[float]] = {k: [] for k in names}
        for rep in range(args.repeats):
            for b, block in enumerate(blocks):
                paths = sorted(block.glob("*/*"))
                turn = rep * len(blocks) + b  # rotate the order: no variant always goes first
                for name in names[turn % 3 :] + names[: turn % 3]:
                    out = Path(tmp) / f"out-{name}-{rep}-{b}"
                    w, c = timed(partial(run_one, name, det, block, out, args.workers))
                    wall[name].append(w / len(paths))
                    cpu[name].append(c / len(paths))
        for name in names:
            print(
                f"{name:10s} wall {1000 * np.median(wall[name]):6.1f} ms/photo, "
                f"CPU {1000 * np.median(cpu[name]):6.1f} ms/photo (medians over blocks)"
            )
        print("\nthroughput of align / bare, per block (1 = as fast as the bare loop):")
        for name in ("no-refine", "refine"):
            for label, t in (("wall", wall), ("CPU ", cpu)):
                ratio = [b / a for a, b in zip(t[name], t["bare"], strict=True)]
                print(f"  align --{name:9s} {label}: {_spread(ratio)}")
        for label, t in (("wall", wall), ("CPU ", cpu)):
            cost = [1000 * (a - b) for a, b in zip(t["refine"], t["no-refine"], strict=True)]
            print(f"refine cost, {label}: {_spread(cost)} ms/photo")


if __name__ == "__main__":
    main()
