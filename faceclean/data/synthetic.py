"""Synthetic face-like images with known identities, for the demo, tests and benchmarks.

Each identity is a fixed random layout (skin tone, eye and mouth geometry, a smooth
identity texture); each of its images is that layout shifted by a few pixels, with its own
brightness and pixel noise. Different identities are far apart, images of one identity
close: enough structure for cleaning to be measured, and made in milliseconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def identity_template(rng: np.random.Generator, size: int = 112) -> np.ndarray:
    """A float32 HxWx3 image in [0, 255] describing one synthetic identity."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    coarse = rng.uniform(0, 255, (6, 6, 3)).astype(np.uint8)
    texture = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC), np.float32)
    skin = rng.uniform(90, 220, 3)
    face = ((xx - 0.5) / rng.uniform(0.28, 0.38)) ** 2 + (
        (yy - 0.52) / rng.uniform(0.36, 0.45)
    ) ** 2
    img = np.where((face < 1)[..., None], skin, rng.uniform(0, 255, 3)).astype(np.float32)
    img = 0.55 * img + 0.45 * texture
    eye_y, eye_dx, eye_r = rng.uniform(0.35, 0.45), rng.uniform(0.12, 0.2), rng.uniform(0.03, 0.06)
    for ex in (0.5 - eye_dx, 0.5 + eye_dx):
        img[((xx - ex) ** 2 + (yy - eye_y) ** 2) < eye_r**2] = rng.uniform(0, 60)
    mouth_y, mouth_w = rng.uniform(0.68, 0.76), rng.uniform(0.1, 0.2)
    img[(np.abs(yy - mouth_y) < 0.02) & (np.abs(xx - 0.5) < mouth_w)] = rng.uniform(60, 140)
    return img


def render(template: np.ndarray, rng: np.random.Generator, jitter: int = 4) -> np.ndarray:
    """One uint8 image of an identity: shifted, re-lit and noisy."""
    dy, dx = rng.integers(-jitter, jitter + 1, 2)
    img = np.roll(template, (int(dy), int(dx)), axis=(0, 1)) * rng.uniform(0.8, 1.2)
    img = img + rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_face_folder(
    root: str | Path,
    identities: int = 20,
    per_identity: int = 10,
    size: int = 112,
    seed: int = 0,
    fmt: str = "png",
) -> Path:
    """Write ``root/id_XXXX/NN.<fmt>`` synthetic face images and return ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for k in range(identities):
        template = identity_template(rng, size)
        folder = root / f"id_{k:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(per_identity):
            Image.fromarray(render(template, rng)).save(folder / f"{j:02d}.{fmt}")
    return root


def clustered_embeddings(
    classes: int, per_class: int, dim: int = 128, spread: float = 0.6, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors clustered on the sphere: (float32 [classes*per_class, dim], int64 labels).

    Each class has a random unit centre; a sample is centre + ``spread`` * Gaussian noise of
    unit expected norm, renormalised (spread 0.6 gives same-class cosines around 0.7,
    different-class around 0 at dim 128, like a trained face model).
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.repeat(np.arange(classes, dtype=np.int64), per_class)
    x = centres[labels] + spread * rng.standard_normal((len(labels), dim)) / np.sqrt(dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), labels


def write_embedding_store(
    path: str | Path, embeddings: np.ndarray, labels: np.ndarray, row_group: int = 65536
) -> Path:
    """Write arrays as an embedding store (paths ``img/<i>.jpg``, identities ``id<label>``)."""
    import pyarrow.parquet as pq

    from faceclean.data.store import atomic_path, embedding_schema, embedding_table

    schema = embedding_schema(embeddings.shape[1], metadata={"synthetic": True})
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for s in range(0, len(labels), row_group):
            e = slice(s, s + row_group)
            idx = range(s, min(s + row_group, len(labels)))
            writer.write_table(
                embedding_table(
                    [f"img/{i}.jpg" for i in idx],
                    labels[e],
                    [f"id{k}" for k in labels[e]],
                    embeddings[e],
                    np.ones(len(idx), np.float32),
                    schema,
                )
            )
    return Path(path)
