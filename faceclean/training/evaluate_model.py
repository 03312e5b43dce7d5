"""Scoring any ONNX face model with extract's rules (``faceclean eval MODEL.onnx``).

The model is run exactly as `faceclean extract` runs it (same preprocessing, output
selection, decoding and fitting, flip TTA), on validation identities and/or InsightFace
``.bin`` pair sets.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def evaluate_onnx(model: Path, val: Path | None, bins, fars, **opts) -> dict:
    """Score any ONNX face model as extract would run it: TAR@FAR/ACC on ``val`` (an
    identity folder or list) and 10-fold accuracy on InsightFace ``.bin`` pair sets, both
    with flip TTA. A ``.bin`` with only genuine or only impostor pairs gets a warning and
    "n/a" instead of an accuracy (any threshold would score 100%)."""
    from faceclean.data.embed import embed_bytes
    from faceclean.data.extraction import extract, resolve_preprocessing
    from faceclean.data.onnx_model import FaceModel
    from faceclean.training.verification import evaluate_bin, evaluate_embeddings

    rgb = opts.get("rgb")
    channels = None if rgb is None else ("RGB" if rgb else "BGR")
    fm = FaceModel(model, opts.get("model_device", "auto"), output=opts.get("model_output"))
    pre = {k: opts.get(k) for k in ("preset", "mean", "std", "fit")}
    spec = resolve_preprocessing(fm, pre["preset"], pre["mean"], pre["std"], channels, pre["fit"])
    rows: dict = {
        "model": str(model),
        "preprocessing": f"{spec.channels}, mean {spec.mean}, std {spec.std}, {spec.fit}, flip TTA",
    }
    if val:
        result = extract(val, fm, flip=True, channels=channels, **pre)
        emb = np.stack(result.table["embedding"].to_numpy(zero_copy_only=False))
        rows["val images"] = f"{result.num_written:,} ({result.num_failed:,} failed)"
        rows.update(evaluate_embeddings(emb, result.table["label"].to_numpy(), tuple(fars)))
    for b in bins:

        def embed(images: list[bytes], flip: bool, where: str = str(b)) -> np.ndarray:
            return embed_bytes(fm, images, spec, flip=flip, where=where)

        r = evaluate_bin(b, embed)
        rows[f"{b.name} accuracy"] = bin_accuracy_text(b, r)
    return rows


def bin_accuracy_text(path: Path, result: dict) -> str:
    """The table cell for one ``.bin`` result of
    :func:`faceclean.training.verification.evaluate_bin`: "acc ± std (g+i pairs)", or, for a
    set with no impostor (or no genuine) pairs, a warning and "n/a"."""
    genuine, impostor = result["genuine"], result["impostor"]
    if result["accuracy"] is not None:
        return f"{result['accuracy']:.4f} ± {result['std']:.4f} ({genuine}+{impostor} pairs)"
    missing = "impostor" if impostor == 0 else "genuine"
    print(
        f"warning: {path}: no {missing} pairs ({genuine} genuine, {impostor} impostor); an "
        "accuracy would be meaningless",
        file=sys.stderr,
    )
    return f"n/a (no {missing} pairs)"
