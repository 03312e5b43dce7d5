"""ONNX model features -> unit embeddings, the one rule extract and evaluation share."""

from __future__ import annotations

import numpy as np

from faceclean.data.onnx_model import FaceModel
from faceclean.data.preprocess import ImageError, Preprocessing, load_pixels, normalise
from faceclean.errors import FacecleanError


def embed_batch(model: FaceModel, x: np.ndarray, flip: bool) -> tuple[np.ndarray, np.ndarray]:
    """(unit embeddings, raw norms). The norm is the model's norm output when it has one,
    else the feature's length. With flip, features of the image and its mirror are summed
    before normalising (InsightFace's evaluation); the norm is the two norms' mean."""
    feats, norms = model.run_with_norm(x)
    if norms is None:  # no norm output (AdaFace has one): the feature's own length
        norms = np.linalg.norm(feats, axis=1)
    if flip:
        mirrored, mirrored_norms = model.run_with_norm(np.ascontiguousarray(x[..., ::-1]))
        if mirrored_norms is None:
            mirrored_norms = np.linalg.norm(mirrored, axis=1)
        norms = (norms + mirrored_norms) / 2
        feats = feats + mirrored
    length = np.linalg.norm(feats, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return feats / length, norms


def embed_bytes(
    model: FaceModel,
    images: list[bytes],
    spec: Preprocessing,
    flip: bool = True,
    batch_size: int = 64,
    where: str | None = None,
) -> np.ndarray:
    """Unit embeddings float32 [N, dim] of encoded images (e.g. a verification ``.bin``),
    decoded and fitted exactly as extract does. An image that cannot be decoded is a
    FacecleanError naming ``where`` and the image's index: a pair set with a hole in it
    would give a wrong accuracy."""
    out = []
    for s in range(0, len(images), batch_size):
        pixels = []
        for i, data in enumerate(images[s : s + batch_size], s):
            try:
                pixels.append(load_pixels(data, spec)[0])
            except ImageError as e:
                raise FacecleanError(f"image {i}: {e}", where) from None
        emb, _ = embed_batch(model, normalise(np.stack(pixels), spec), flip)
        out.append(emb.astype(np.float32))
    if not out:
        return np.empty((0, model.dim), np.float32)
    return np.concatenate(out)
