"""Do `faceclean align` crops of raw photos identify as well as crops from a stronger detector?

../shared/data/celeb_dev_raw holds the whole CelebA photos of 30 identities (779 JPEGs);
../shared/data/celeb_dev holds crops of the same photos (same folder and file names) aligned
to the same ArcFace template with SCRFD-2.5G landmarks. This script aligns the raw photos
with faceclean (YuNet) in a few settings, embeds every crop with the shared MobileFaceNet
(``--preset imagenet``) and compares nearest-neighbour (1-NN) identification, photo for
photo, with the SCRFD crops:

* within: each photo's crop is a probe against the crops of every *other* photo of the 30
  identities aligned the same way (leave-one-out; the probe's own photo is never in the
  gallery, so every figure is on held-out photos);
* vs-scrfd-gallery: each probe against the SCRFD crops of all 178 celeb_dev identities
  (3,245 crops, 148 identities only as distractors) minus the probe's own photo: the same
  gallery for both kinds of probe, which favours SCRFD probes (aligned like the gallery).

A photo where faceclean kept no face counts as an error. The few raw photos in which SCRFD
found no face (absent from celeb_dev) are left out of the comparison and listed. The
spread is a paired bootstrap over photos (2,000 resamples): the 95% interval of faceclean
minus SCRFD.

    python benchmarks/bench_align_celeb.py [--variants default,no-refine,identity,...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from faceclean.data.align import align
from faceclean.data.align_identity import CropEmbedder

SHARED = Path(__file__).resolve().parents[2] / "shared"
RAW = SHARED / "data/celeb_dev_raw"
SCRFD = SHARED / "data/celeb_dev"
YUNET = SHARED / "models/face_detection_yunet_2026may.onnx"
MODEL = SHARED / "models/mobilefacenet-foamliu.onnx"
VARIANTS = {
    "default": {},  # largest plausible face, checks, rotated retries, refine
    "no-refine": {"refine": False},
    "identity": {"pick": "identity"},
    "largest-only": {"check": False, "rotate": False},  # no checks or turns
}


def embed_files(embedder: CropEmbedder, files: list[Path], batch: int = 64) -> np.ndarray:
    out = []
    for s in range(0, len(files), batch):
        crops = []
        for f in files[s : s + batch]:
            with Image.open(f) as im:
                crops.append(im.convert("RGB"))
        out.append(embedder(crops))
    return np.concatenate(out)


def nn_correct(probes: np.ndarray, gallery: np.ndarray, g_labels, g_keys, p_labels, p_keys):
    """Per probe: whether its nearest gallery crop (own photo excluded) has its label."""
    sim = probes @ gallery.T
    same_photo = np.asarray(p_keys)[:, None] == np.asarray(g_keys)[None, :]
    sim[same_photo] = -np.inf
    return np.asarray(g_labels)[sim.argmax(1)] == np.asarray(p_labels)


def bootstrap(diff: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(n)]
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    embedder = CropEmbedder(MODEL, device="cpu", preset="imagenet", threads=1)
    every = sorted(str(p.relative_to(RAW)) for p in RAW.glob("*/*.jpg"))
    # SCRFD found no face in a few raw photos: they are compared apart.
    keys = [k for k in every if (SCRFD / k).is_file()]
    no_scrfd = sorted(set(every) - set(keys))
    labels = [k.split("/")[0] for k in keys]
    gallery_files = sorted(SCRFD.glob("*/*.jpg"))
    g_keys = [str(f.relative_to(SCRFD)) for f in gallery_files]
    g_labels = [f.parent.name for f in gallery_files]
    t = time.perf_counter()
    gallery = embed_files(embedder, gallery_files)
    ref = gallery[[g_keys.index(k) for k in keys]]
    print(
        f"{len(every)} raw photos, {len(keys)} with a SCRFD crop, of {len(set(labels))} "
        f"identities; SCRFD gallery "
        f"{len(gallery_files)} crops of {len(set(g_labels))} identities "
        f"(embedded in {time.perf_counter() - t:.0f} s)\n"
    )
    ref_within = nn_correct(ref, ref, labels, keys, labels, keys)
    ref_gallery = nn_correct(ref, gallery, g_labels, g_keys, labels, keys)
    print(
        f"{'crops':28s} {'kept':>5s} {'within':>7s} {'vs-scrfd-gallery':>17s}  "
        "faceclean - SCRFD within [95% bootstrap]"
    )
    print(
        f"{'SCRFD (celeb_dev)':28s} {len(keys):5d} {ref_within.mean():7.4f} "
        f"{ref_gallery.mean():17.4f}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.variants.split(","):
            kwargs = dict(VARIANTS[name])
            if kwargs.get("pick") == "identity":
                kwargs |= {"embedder": embedder}
            out = Path(tmp) / name
            t = time.perf_counter()
            r = align(RAW, out, YUNET, workers=args.workers, device="cpu", **kwargs)
            secs = time.perf_counter() - t
            kept = [(out / k).is_file() for k in keys]
            emb = np.zeros_like(ref)
            idx = [i for i, k in enumerate(kept) if k]
            emb[idx] = embed_files(embedder, [out / keys[i] for i in idx])
            within = nn_correct(emb, emb, labels, keys, labels, keys) & np.array(kept)
            vs_gallery = nn_correct(emb, gallery, g_labels, g_keys, labels, keys) & np.array(kept)
            diff = within.astype(float) - ref_within
            lo, hi = bootstrap(diff)
            print(
                f"faceclean {name:18s} {sum(kept):5d} {within.mean():7.4f} "
                f"{vs_gallery.mean():17.4f}  {diff.mean():+.4f} [{lo:+.4f}, {hi:+.4f}]"
            )
            rows = pq.read_table(r.records_path).to_pylist()
            several = sum(1 for x in rows if (x["faces_found"] or 0) > 1)
            print(
                f"    {secs:.0f} s; {r.num_failed} without a face, {r.num_rotated} turned, "
                f"{r.num_rejected} all-implausible, {several} with several faces"
                + (f", {r.num_chosen} chosen by identity" if r.num_chosen else "")
            )
            wrong = [keys[i] for i in np.nonzero(ref_within & ~within)[0]]
            print(f"    right with SCRFD, wrong here: {len(wrong)} {wrong[:6]}")
            got = [k for k in no_scrfd if (out / k).is_file()]
            print(f"    of the {len(no_scrfd)} photos SCRFD found no face in, cropped: {got}")


if __name__ == "__main__":
    main()
