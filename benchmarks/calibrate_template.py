"""Where a detector marks the five landmarks of faces aligned to the ArcFace template.

Each celeb_dev crop (aligned to the ArcFace template with SCRFD's landmarks) of the
identities *not* in celeb_dev_raw is pasted at the centre of a 224x224 canvas (as
``refine_landmarks`` sees a face) and the detector run on it; the mean landmarks are the
template that detector's landmarks should be warped onto (``YUNET_TEMPLATE`` in
``faceclean/data/align_warp.py``). Held out: celeb_dev_raw's 30 identities, which
``bench_align_celeb.py`` measures on, are not used.

    python benchmarks/calibrate_template.py [--detector PATH] [--every 2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from faceclean.data.align_warp import ARCFACE_TEMPLATE
from faceclean.data.detectors import FaceDetector

SHARED = Path(__file__).resolve().parents[2] / "shared"
MARGIN = 56


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    yunet = SHARED / "models/face_detection_yunet_2026may.onnx"
    ap.add_argument("--detector", type=Path, default=yunet)
    ap.add_argument("--every", type=int, default=2, help="use every k-th crop")
    args = ap.parse_args()
    det = FaceDetector(args.detector, device="cpu", threads=1)
    held_out = {p.name for p in (SHARED / "data/celeb_dev_raw").iterdir() if p.is_dir()}
    files = sorted(
        f for f in (SHARED / "data/celeb_dev").glob("*/*.jpg") if f.parent.name not in held_out
    )[:: args.every]
    found = []
    for f in files:
        canvas = Image.new("RGB", (112 + 2 * MARGIN,) * 2)
        canvas.paste(Image.open(f).convert("RGB"), (MARGIN, MARGIN))
        faces = det.detect(canvas, 0.3)
        if len(faces):
            centre = (faces.boxes[:, :2] + faces.boxes[:, 2:]) / 2 - (56 + MARGIN)
            found.append(faces.landmarks[int(np.argmin((centre**2).sum(1)))] - MARGIN)
    found = np.array(found, np.float64)
    ids = len({f.parent.name for f in files})
    print(f"{det.kind}: landmarks found on {len(found)} of {len(files)} crops of {ids} identities")
    print("point            ArcFace template     mean (std) of the detector's landmarks")
    names = ["left eye", "right eye", "nose", "left mouth", "right mouth"]
    for k, name in enumerate(names):
        t, m, s = ARCFACE_TEMPLATE[k], found.mean(0)[k], found.std(0)[k]
        print(
            f"{name:12s} ({t[0]:6.2f}, {t[1]:6.2f})   ({m[0]:6.2f}, {m[1]:6.2f})  "
            f"(std {s[0]:.2f}, {s[1]:.2f})"
        )
    print("as code:", np.array2string(found.mean(0).round(2), separator=", "))


if __name__ == "__main__":
    main()
