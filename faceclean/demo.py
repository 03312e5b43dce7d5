"""`faceclean demo`: the pipeline end to end on synthetic faces, with nothing to download."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import torch
from rich.console import Console
from torch import nn

from faceclean.onnx_model import METADATA_KEY
from faceclean.preprocess import PRESETS, Preprocessing


class TinyFaceNet(nn.Module):
    """A small CNN face embedder (a stand-in until a trained backbone is exported)."""

    def __init__(self, dim: int = 64, width: int = 16):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, 2, 1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(7),
        )
        self.head = nn.Linear(2 * w * 49, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


def export_tiny_model(
    path: str | Path,
    size: int = 112,
    dim: int = 64,
    seed: int = 0,
    dynamic_batch: bool = True,
    preset: str | None = "insightface",
    width: int = 16,
) -> Path:
    """Export a seeded TinyFaceNet to ONNX (input ``data`` [N,3,size,size]).

    With ``preset`` the preprocessing is recorded in the model's metadata, so `extract`
    needs no flags; ``dynamic_batch=False`` fixes the batch dimension to 1, like many
    models in the wild.
    """
    torch.manual_seed(seed)
    net = TinyFaceNet(dim, width).eval()
    path = Path(path)
    axes = {"data": {0: "batch"}, "embedding": {0: "batch"}} if dynamic_batch else None
    torch.onnx.export(
        net,
        (torch.zeros(1, 3, size, size),),
        str(path),
        input_names=["data"],
        output_names=["embedding"],
        dynamic_axes=axes,
        dynamo=False,
    )
    if preset:
        p = PRESETS[preset]
        spec = Preprocessing(p["mean"], p["std"], p["channels"], size, size)
        model = onnx.load(str(path))
        model.metadata_props.add(key=METADATA_KEY, value=json.dumps(spec.to_dict()))
        onnx.save(model, str(path))
    return path


def nearest_neighbour_accuracy(embeddings: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out 1-NN identification accuracy of unit embeddings (cosine)."""
    sims = embeddings @ embeddings.T
    np.fill_diagonal(sims, -np.inf)
    return float((labels[sims.argmax(1)] == labels).mean())


def run_demo(output: Path, identities: int, per_identity: int, seed: int, console: Console) -> None:
    from faceclean.extract import extract
    from faceclean.store import iter_embeddings
    from faceclean.synthetic import make_face_folder

    output.mkdir(parents=True, exist_ok=True)
    images = output / "images"
    console.rule("[bold]faceclean demo")
    if not images.exists():
        console.print(f"making {identities} x {per_identity} synthetic faces in {images}")
        make_face_folder(images, identities, per_identity, seed=seed)
    model = export_tiny_model(output / "tiny-facenet.onnx", seed=seed)
    console.print(f"exported a small face model to {model}")
    emb_path = output / "embeddings.parquet"
    result = extract(images, model, emb_path, overwrite=True, progress=True)
    batch = next(iter_embeddings(emb_path, batch_rows=1 << 30))
    acc = nearest_neighbour_accuracy(batch["embedding"], batch["label"])
    console.print(
        f"extracted {result.num_written} embeddings ({result.images_per_second:,.0f} images/s, "
        f"{result.batch_mode} batching); 1-NN identification accuracy {acc:.3f}"
    )
    console.print(f"artefacts: images {images}, model {model}, embeddings {emb_path}")
