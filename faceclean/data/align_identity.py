"""``faceclean align --pick identity``: in a photo with several faces, keep its class's face.

A labelled photo of a person often shows others too (a poster behind them, a crowd, a
partner larger in the frame). The first pass keeps every plausible face of each photo and
embeds them with a face model; each photo's first-pass face is its largest. For a photo
with several faces, the class centroid is the sum of the first-pass embeddings of the
*other* photos of its label (leave-one-out, so the photo cannot vote for itself), and the
face with the highest cosine to it is kept. A photo whose label has no other photo keeps
its largest face.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from faceclean.data.embed import embed_batch
from faceclean.data.extraction import resolve_preprocessing
from faceclean.data.onnx_model import FaceModel
from faceclean.data.preprocess import fit_image, normalise


class CropEmbedder:
    """Unit embeddings of aligned crops with an ONNX face model (as ``extract`` makes them,
    without flip).

    Args:
        model: the .onnx face model. device: "auto", "cpu" or "cuda".
        preset, mean, std, channels: its preprocessing, as for ``extract`` (needed unless
            the model records it).
        threads: onnxruntime intra-op threads (None: its default).
    """

    def __init__(
        self,
        model: str | Path,
        device: str = "auto",
        preset: str | None = None,
        mean=None,
        std=None,
        channels: str | None = None,
        threads: int | None = None,
    ):
        self.model = FaceModel(model, device=device, threads=threads)
        self.spec = resolve_preprocessing(self.model, preset, mean, std, channels, None)

    def __call__(self, crops: list[Image.Image]) -> np.ndarray:
        """float32 [len(crops), dim], unit length."""
        spec = self.spec
        fitted = [fit_image(c.convert("RGB"), spec.height, spec.width, spec.fit) for c in crops]
        pixels = np.stack([np.asarray(c) for c in fitted])
        emb, _ = embed_batch(self.model, normalise(pixels, spec), flip=False)
        return emb.astype(np.float32)


def choose_by_identity(
    labels: dict[int, int], first: dict[int, np.ndarray], candidates: dict[int, np.ndarray]
) -> dict[int, tuple[int, float]]:
    """The face to keep in each photo with several.

    Args:
        labels: {photo: class label} for every photo with a first-pass embedding.
        first: {photo: unit embedding [dim] of its first-pass (largest) face}.
        candidates: {photo: unit embeddings [k, dim] of its faces, largest first}.

    Returns:
        {photo in candidates: (index of the face kept, its cosine to the leave-one-out
        centroid; NaN when the label has no other photo and the largest is kept)}.
    """
    sums: dict[int, np.ndarray] = {}
    for i, e in first.items():
        sums[labels[i]] = sums.get(labels[i], 0) + e.astype(np.float64)
    out = {}
    for i, cands in candidates.items():
        centroid = sums.get(labels[i], 0) - (first[i] if i in first else 0)
        norm = float(np.linalg.norm(centroid)) if np.ndim(centroid) else 0.0
        if norm < 1e-6:
            out[i] = (0, float("nan"))
            continue
        sims = cands.astype(np.float64) @ (centroid / norm)
        k = int(np.argmax(sims))
        out[i] = (k, float(sims[k]))
    return out
