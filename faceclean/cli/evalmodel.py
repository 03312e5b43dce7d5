"""Scoring any ONNX face model (``faceclean eval MODEL.onnx``) with extract's rules.

The `eval` command (in :mod:`faceclean.cli.train`) hands a ``.onnx`` argument here: the model
is run exactly as `faceclean extract` runs it (same preprocessing flags, output selection,
decoding and fitting, flip TTA), on validation identities and/or InsightFace ``.bin`` sets.
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
from rich.markup import escape

from faceclean.cli.common import console
from faceclean.cli.extract import preprocessing_options


def onnx_model_options(f):
    """The preprocessing and model options of `extract`, for commands that run any ONNX
    model the way extract does (``faceclean eval MODEL.onnx``)."""
    f = click.option("--model-output", metavar="NAME", help="The model's embedding output.")(f)
    f = click.option(
        "--model-device",
        type=click.Choice(["auto", "cpu", "cuda"]),
        default="auto",
        show_default=True,
        help="Where onnxruntime runs an ONNX model.",
    )(f)
    return preprocessing_options(f)


def evaluate_onnx(model: Path, val: Path | None, bins, fars, **opts) -> dict:
    """Score any ONNX face model as extract would run it: TAR@FAR/ACC on ``val`` (an
    identity folder or list) and 10-fold accuracy on InsightFace ``.bin`` pair sets, both
    with flip TTA. A ``.bin`` with only genuine or only impostor pairs gets a warning and
    "n/a" instead of an accuracy (any threshold would score 100%)."""
    from faceclean.data.embed import embed_bytes
    from faceclean.data.extraction import extract, resolve_preprocessing
    from faceclean.data.onnx_model import FaceModel
    from faceclean.training.verification import evaluate_embeddings, kfold_accuracy, load_bin

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
        images, issame = load_bin(b)
        genuine, impostor = int(issame.sum()), int((~issame).sum())
        if one_sided_bin(b, issame):
            rows[f"{b.name} accuracy"] = one_sided_bin(b, issame, warn=False)
            continue
        e = embed_bytes(fm, images, spec, flip=True, where=str(b))
        scores = np.einsum("nd,nd->n", e[0::2], e[1::2])
        # InsightFace's 10 folds; fewer pairs than folds would leave empty folds (NaN).
        acc, std = kfold_accuracy(scores, issame, folds=min(10, len(issame)))
        rows[f"{b.name} accuracy"] = f"{acc:.4f} ± {std:.4f} ({genuine}+{impostor} pairs)"
    return rows


def one_sided_bin(path: Path, issame: np.ndarray | None = None, warn: bool = True) -> str | None:
    """For a ``.bin`` with no impostor (or no genuine) pairs: warn and return the "n/a"
    text to show instead of an accuracy (any threshold scores 100% there). None otherwise."""
    if issame is None:
        from faceclean.training.verification import load_bin

        issame = load_bin(path)[1]
    genuine, impostor = int(issame.sum()), int((~issame).sum())
    if genuine and impostor:
        return None
    missing = "impostor" if impostor == 0 else "genuine"
    if warn:
        console.print(
            f"[yellow]warning:[/] {escape(str(path))}: no {missing} pairs "
            f"({genuine} genuine, {impostor} impostor); an accuracy would be meaningless",
            highlight=False,
            soft_wrap=True,
        )
    return f"n/a (no {missing} pairs)"
