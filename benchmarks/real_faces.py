"""Real embeddings for the cleaning benchmarks, cached outside the repository.

* ``celeb_dev_store()``: ../shared/data/celeb_dev (178 identities, 3,245 aligned crops)
  embedded with the shared MobileFaceNet (``--preset imagenet``);
* ``orl_store()``: ../shared/data/orl_faces (40 identities, 400 faces) the same way;
* ``nonface_store()``: 240 real non-face crops with the same model: the bottom-left and
  bottom-right quarters of 120 celeb_dev_raw photos (seeded choice), resized to 112 x 112,
  which hold shoulders, clothes, hands and background, the things a detector mistakes
  for faces in scraped photos. Their feature norms (median 8.9) sit where the issue's
  non-face crops did (6.7-9.5), far below real faces' (median 17.3).

Both go to ``$FACECLEAN_BENCH_CACHE`` (default: <tmp>/faceclean-bench) and are re-used.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MODEL = SHARED / "models" / "mobilefacenet-foamliu.onnx"


def cache_dir() -> Path:
    d = Path(
        os.environ.get("FACECLEAN_BENCH_CACHE", Path(tempfile.gettempdir()) / "faceclean-bench")
    )
    d.mkdir(parents=True, exist_ok=True)
    return d


def _shared() -> Path:
    """../shared beside the repository, or $FACECLEAN_SHARED (worktrees sit elsewhere)."""
    for cand in (os.environ.get("FACECLEAN_SHARED"), SHARED, Path("/work/shared")):
        if cand and (Path(cand) / "models").is_dir():
            return Path(cand)
    raise SystemExit("../shared (models, data) not found: set FACECLEAN_SHARED")


def _extract(data: Path, out: Path, **options) -> Path:
    from faceclean.data.extraction import extract

    if not out.exists():
        model = _shared() / "models" / "mobilefacenet-foamliu.onnx"
        extract(data, model, out, preset="imagenet", workers=1, progress=True, **options)
    return out


def celeb_dev_store() -> Path:
    return _extract(_shared() / "data" / "celeb_dev", cache_dir() / "celeb_dev.parquet")


def orl_store() -> Path:
    """ORL (40 identities x 10 grey faces, 92 x 112: padded to the model's square input)."""
    return _extract(_shared() / "data" / "orl_faces", cache_dir() / "orl.parquet", fit="pad")


def nonface_store(count: int = 120, seed: int = 0) -> Path:
    from PIL import Image

    out = cache_dir() / "nonface.parquet"
    if out.exists():
        return out
    folder = cache_dir() / "nonface" / "nonface"
    folder.mkdir(parents=True, exist_ok=True)
    photos = sorted((_shared() / "data" / "celeb_dev_raw").glob("*/*.jpg"))
    for p in random.Random(seed).sample(photos, count):
        im = Image.open(p).convert("RGB")
        w, h = im.size
        for name, box in (("bl", (0, h // 2, w // 2, h)), ("br", (w // 2, h // 2, w, h))):
            crop = im.crop(box).resize((112, 112))
            crop.save(folder / f"{p.parent.name}_{p.stem}_{name}.jpg", quality=95)
    return _extract(folder.parent, out)
