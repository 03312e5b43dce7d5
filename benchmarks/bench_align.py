"""Throughput of `faceclean align` against a bare detector loop, on ORL faces in scenes.

The same photos (ORL crops pasted at random positions, scales and rotations into 640x480
scenes, written as JPEG) are processed three ways in one run:
  * bare: the photos already decoded in memory, the detector alone in a plain loop (no
    decoding, warping or writing) — the ceiling for one worker;
  * align with 1 worker and with --workers N, with and without --refine (a second
    detector call on each face warped upright): decode, detect, warp, write each crop.

    python benchmarks/bench_align.py [--images 400] [--workers 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from faceclean.data.align import affine_warp, align
from faceclean.data.detectors import FaceDetector

SHARED = Path(__file__).resolve().parents[2] / "shared"
YUNET = SHARED / "models/face_detection_yunet_2026may.onnx"
ORL = SHARED / "data/orl_faces"


def make_scenes(folder: Path, n: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    crops = sorted(ORL.glob("s*/*.pgm"))
    paths = []
    for k in range(n):
        f = crops[k % len(crops)]
        crop = Image.open(f).convert("RGB")
        scale, angle = rng.uniform(1.0, 2.5), np.deg2rad(rng.uniform(-20, 20))
        lin = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        pos = rng.uniform([40, 40], [400, 200])
        m = np.hstack([lin, pos[:, None]])
        bg = Image.fromarray(rng.uniform(0, 255, (6, 8, 3)).astype(np.uint8))
        scene = bg.resize((640, 480), Image.BICUBIC)
        mask = affine_warp(Image.new("L", crop.size, 255), m, (640, 480))
        scene.paste(affine_warp(crop, m, (640, 480)), (0, 0), mask)
        out = folder / f.parent.name / f"{k}.jpg"
        out.parent.mkdir(parents=True, exist_ok=True)
        scene.save(out, quality=92)
        paths.append(out)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = make_scenes(tmp / "raw", args.images)
        det = FaceDetector(YUNET, device="auto", threads=1)
        images = [Image.open(p).convert("RGB") for p in paths]
        t = time.perf_counter()
        found = sum(len(det.detect(im, 0.6)) > 0 for im in images)
        bare = len(images) / (time.perf_counter() - t)
        print(f"{len(images)} photos 640x480, detector {det.kind} on {det.providers[0]}")
        print(f"bare detector loop, 1 thread:      {bare:8.1f} images/s ({found} with a face)")
        for refine in (False, True):
            for workers in sorted({1, args.workers}):
                out = tmp / f"out{workers}{refine}"
                r = align(tmp / "raw", out, YUNET, workers=workers, refine=refine)
                flag = "--refine   " if refine else "--no-refine"
                print(
                    f"align --workers {workers} {flag}:  {r.images_per_second:8.1f} images/s "
                    f"({r.num_faces} crops, {r.num_failed} without a face, "
                    f"{r.images_per_second / bare:.2f}x the bare loop)"
                )
        t = time.perf_counter()
        r = align(tmp / "raw", out, YUNET, workers=args.workers)
        print(f"re-run (all resumed):              {time.perf_counter() - t:8.2f} s")


if __name__ == "__main__":
    main()
