"""One photo of `faceclean align`: decode, find the faces, pick, warp, write, describe.

:func:`align_photo` returns the rows of the per-photo record
(:mod:`faceclean.data.align_records`) with the crops already written, or, for
``--pick identity`` and a photo with several plausible faces, the candidate crops left for
the second pass to choose from (:class:`Pending`).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from faceclean.data.align_checks import find_faces, roll_degrees
from faceclean.data.align_records import UNREADABLE
from faceclean.data.align_warp import refine_landmarks, warp
from faceclean.data.detectors import Faces
from faceclean.data.preprocess import ImageError, decode_image
from faceclean.data.store import atomic_path
from faceclean.errors import FacecleanError

PICKS = ("largest", "central", "identity", "all")
_FORMATS = {e: f for e, f in Image.registered_extensions().items()}
# Faces scoring this much under the photo's best face are not picked by "largest" or
# "central" (celeb_dev_raw: a drum at 0.67 beside a face at 0.78, an edge fragment at 0.68
# beside a face at 0.92; several genuine faces in a photo score within ~0.1 of each other).
PICK_MARGIN = 0.1
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


@dataclass(frozen=True)
class Options:
    """How each photo is aligned (see :func:`faceclean.data.align.align` for the meaning)."""

    pick: str = "largest"
    min_size: float = 0.0
    min_score: float = 0.6
    size: int = 112
    refine: bool = True
    check: bool = True
    rotate: bool = True


@dataclass
class Pending:
    """A photo with several plausible faces, waiting for ``--pick identity``'s choice."""

    crops: list[Image.Image]
    rows: list[dict]  # one per candidate, largest first, "crop" not yet set
    embeddings: np.ndarray  # [k, dim] unit


@dataclass
class PhotoResult:
    rows: list[dict]  # record rows of the photo (written crops or the reason for none)
    residuals: list[float] = field(default_factory=list)
    pending: Pending | None = None
    embedding: np.ndarray | None = None  # --pick identity: the kept (largest) face's


def pick_faces(faces: Faces, image_size: tuple[int, int], pick: str) -> Faces:
    """The faces to keep, of those that passed the checks.

    Only faces scoring within :data:`PICK_MARGIN` of the photo's best are eligible for
    "largest" and "central": a large low-scoring detection (a drum, a hat, a blurred
    fragment at the edge) must not win over a clear face. "largest" keeps the largest of
    them, "central" the one nearest the image centre; "all" and "identity" keep every face,
    the eligible ones first, largest first within each group (so the first is what
    "largest" would keep).
    """
    if pick not in PICKS:
        raise FacecleanError(f"--pick must be one of {', '.join(PICKS)}, not {pick!r}")
    if not len(faces):
        return faces
    eligible = faces.scores >= faces.scores.max() - PICK_MARGIN
    if pick == "central":
        centre = (faces.boxes[:, :2] + faces.boxes[:, 2:]) / 2 - np.array(image_size) / 2
        far = np.where(eligible, (centre**2).sum(1), np.inf)
        return faces.take([int(np.argmin(far))])
    area = np.prod(faces.boxes[:, 2:] - faces.boxes[:, :2], axis=1)
    order = np.lexsort((-area, ~eligible))  # eligible first, then by area, largest first
    return faces.take(order[:1] if pick == "largest" else order)


def suffixed(rel: str, k: int) -> str:
    """``a/b.jpg``, 2 -> ``a/b_2.jpg`` (``--pick all``'s crop names)."""
    stem, ext = os.path.splitext(rel)
    return f"{stem}_{k}{ext}"


def save(image: Image.Image, path: Path) -> None:
    """Write ``image`` atomically in the format its extension names."""
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise FacecleanError("cannot tell the image format from the extension", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        image.save(tmp, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))


def grey_source(data: bytes) -> bool:
    """Whether encoded image bytes hold a greyscale image (PGM, grey JPEG/PNG), from the
    header alone (~0.1 ms; comparing the decoded channels cost ~2 ms a photo)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.mode in _GREY_MODES
    except Exception:  # decode_image has already said what is wrong with it
        return False


def _row(path: str, identity: str, **values) -> dict:
    return {"path": path, "identity": identity, **values}


def align_photo(
    read, path: str, identity: str, rel: str, out_root: Path, det, opts: Options, embed=None
) -> PhotoResult:
    """Align one photo to ``out_root/rel``.

    Args:
        read: a call that returns the photo's encoded bytes.
        path, identity: how the record names the photo and its class.
        rel: where its crop goes, relative to ``out_root`` (``--pick all``: ``rel`` with
            ``_1``, ``_2``... suffixes). det: the FaceDetector.
        embed: ``--pick identity``'s :class:`CropEmbedder` (else None).
    """
    try:
        data = read()
    except (FacecleanError, OSError) as e:  # missing or unreadable: retried on a re-run
        return PhotoResult([_row(path, identity, reason=f"{UNREADABLE}{e}")])
    try:
        # extract's decoder: upright by EXIF, RGB, and a reason a person can read.
        image = decode_image(data)
    except (ImageError, FacecleanError, OSError) as e:
        return PhotoResult([_row(path, identity, reason=str(e))])
    if grey_source(data):
        image = image.convert("L")  # a greyscale photo stays greyscale (PGM in, PGM out)
    found = find_faces(
        det, image, opts.min_score, opts.min_size, check=opts.check, rotate=opts.rotate
    )
    common = {"faces_found": found.num_found, "rotation": found.rotation}
    if found.reason is not None:
        return PhotoResult([_row(path, identity, reason=found.reason, **common)])
    faces = pick_faces(found.faces, image.size, opts.pick)
    landmarks = faces.landmarks.astype(np.float64)
    if opts.refine:
        landmarks = [refine_landmarks(det, image, lm) for lm in landmarks]
    crops = [warp(image, lm, opts.size) for lm in landmarks]
    rows = [
        _row(
            path,
            identity,
            score=float(faces.scores[k]),
            box=[float(v) for v in faces.boxes[k]],
            landmarks=[float(v) for v in np.ravel(landmarks[k])],
            roll=roll_degrees(landmarks[k]),
            residual=crops[k][1],
            **common,
        )
        for k in range(len(faces))
    ]
    residuals = [res for _, res in crops]
    if opts.pick == "identity":
        emb = embed([c for c, _ in crops])
        if len(crops) > 1:
            return PhotoResult([], [], Pending([c for c, _ in crops], rows, emb))
        rows[0]["crop"] = rel
        save(crops[0][0], out_root / rel)
        return PhotoResult(rows, residuals, embedding=emb[0])
    rels = [rel] if opts.pick != "all" else [suffixed(rel, k + 1) for k in range(len(crops))]
    for r, row, (crop, _) in zip(rels, rows, crops, strict=True):
        save(crop, out_root / r)
        row["crop"] = r
    return PhotoResult(rows, residuals)
