"""`faceclean demo`: the pipeline end to end on synthetic faces, with nothing to download."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from torch import nn

from faceclean.data.preprocess import PRESETS, Preprocessing
from faceclean.training.export import export_face_model, export_onnx


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
    net = TinyFaceNet(dim, width)
    spec = None
    if preset:
        p = PRESETS[preset]
        spec = Preprocessing(p["mean"], p["std"], p["channels"], size, size)
    return export_face_model(net, path, size, spec, dynamic_batch)


# One search trial on the demo data: 56-px images, 30 SGD steps; ACC over FARs the
# 90-image validation set can resolve.
DEMO_TRIAL = {
    "input_size": 56,
    "embedding_size": 64,
    "epochs": 1,
    "max_steps": 30,
    "batch_size": 32,
    "workers": 0,
}
DEMO_FARS = (1e-2, 1e-3)


def nearest_neighbour_accuracy(embeddings: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out 1-NN identification accuracy of unit embeddings (cosine)."""
    sims = embeddings @ embeddings.T
    np.fill_diagonal(sims, -np.inf)
    return float((labels[sims.argmax(1)] == labels).mean())


def run_demo(
    output: Path,
    identities: int,
    per_identity: int,
    seed: int,
    console: Console,
    model: Path | None = None,
    steps: int = 3,
    batch: int = 2,
) -> dict:
    """The whole pipeline on synthetic faces with known noise, on a CPU in about a minute:
    bootstrap extractor -> extract -> inject noise -> clean (scored against the truth) ->
    joint search -> re-train the best -> a list of every artefact."""
    import pyarrow.parquet as pq

    from faceclean.cleaning.clean import clean
    from faceclean.cleaning.noise import evaluate, inject_noise, split_pairs
    from faceclean.data.extraction import extract
    from faceclean.data.store import iter_embeddings, write_tables
    from faceclean.data.synthetic import make_face_folder
    from faceclean.search.face_search import run_search
    from faceclean.training.run import TrainConfig
    from faceclean.training.train import train

    output.mkdir(parents=True, exist_ok=True)
    size = 56
    console.rule("[bold]faceclean demo")
    sets = {
        "train": (identities, per_identity, seed),
        "val": (15, 6, seed + 1),
        "bootstrap": (40, 12, seed + 2),
    }
    for name, (k, n, s) in sets.items():
        if not (output / name).exists():
            make_face_folder(output / name, k, n, size=size, seed=s)
    console.print(
        f"1. synthetic faces: {output / 'train'} ({identities} x {per_identity}), "
        f"validation {output / 'val'}, bootstrap {output / 'bootstrap'}"
    )
    if model is None:
        cfg = TrainConfig(
            clean_list=str(output / "bootstrap"),
            input_size=size,
            embedding_size=64,
            width=0.5,
            depth=0.5,
            loss="arcface",
            loss_kwargs={"s": 32.0, "m": 0.3},
            epochs=6,
            batch_size=32,
            warmup_epochs=1,
            workers=0,
            seed=seed,
        )
        train(cfg, output / "bootstrap-run", progress=True)  # resumes: a no-op when done
        model = export_onnx(output / "bootstrap-run", output / "bootstrap.onnx", overwrite=True)
        console.print(f"2. trained a bootstrap extractor and exported it: {model}")
    emb = output / "embeddings.parquet"
    result = extract(output / "train", model, emb, overwrite=True, progress=True)
    batch_ = next(iter_embeddings(emb, batch_rows=1 << 30))
    acc = nearest_neighbour_accuracy(batch_["embedding"], batch_["label"])
    console.print(
        f"3. extracted {result.num_written} embeddings "
        f"({result.images_per_second:,.0f} images/s); 1-NN accuracy {acc:.3f}"
    )
    noisy = inject_noise(pq.read_table(emb), flip=0.08, outlier=0.05, split=0.05, seed=seed)
    noisy_path, truth_path = output / "noisy.parquet", output / "noisy.truth.parquet"
    write_tables((noisy.table, noisy_path), (noisy.truth, truth_path))
    counts = {c["values"]: c["counts"] for c in noisy.truth["noise"].value_counts().to_pylist()}
    console.print(f"4. injected known noise: {counts}")
    truth_noise = noisy.truth["noise"].to_numpy(zero_copy_only=False)
    pairs = split_pairs(noisy.truth)
    m = {}
    # The paper's fixed thresholds, then thresholds chosen from these embeddings alone: a
    # bootstrap extractor's cosines are not MobileFaceNet's (different people sit near
    # 0.6 here), which is what `auto` is for.
    for name, folder, tau_intra, tau_inter in (
        ("paper", "cleaned-paper", 0.3, 0.62),
        ("auto", "cleaned", "auto", "auto"),
    ):
        cleaned = clean(
            noisy_path,
            output / folder,
            tau_intra,
            tau_inter,
            min_link_ratio="auto" if name == "auto" else None,
            overwrite=True,
        )
        keep = pq.read_table(cleaned.outputs["scores"])["keep"].to_numpy(zero_copy_only=False)
        m[name] = evaluate(keep, truth_noise, cleaned.merge.merged_label, pairs)
        s = cleaned.summary
        console.print(
            f"5{'ab'[name == 'auto']}. clean at tau_intra {s['tau_intra']}, tau_inter "
            f"{s['tau_inter']} ({name}): removal precision {m[name]['removal_precision']:.3f}"
            f" recall {m[name]['removal_recall']:.3f} (flips {m[name]['recall_flip']:.3f}, "
            f"outliers {m[name]['recall_outlier']:.3f}); merge precision "
            f"{m[name]['merge_precision']:.3f} recall {m[name]['merge_recall']:.3f} "
            f"({m[name]['merge_pairs']} pairs merged, {len(pairs)} true)"
        )
    console.print(
        f"   auto: {cleaned.summary['tau_intra_auto']}; {cleaned.summary['tau_inter_auto']}"
    )
    m = {**m["auto"], "paper": m["paper"]}
    console.print(f"6. joint search: {steps} steps x {batch} trials")
    summary = run_search(
        noisy_path,
        output / "val",
        output / "search",
        data_root=output / "train",
        steps=steps,
        batch=batch,
        train_kwargs=DEMO_TRIAL,
        fars=DEMO_FARS,
        retrain_top=1,
        retrain_epochs=4,
        seed=seed,
        resume=(output / "search" / "state.pt").exists(),
        console=console,
        # One step of uniform warm-up: the search's default (16 trials) would be the whole
        # of a demo-sized budget, and the controller would never update.
        controller={"warmup_trials": batch},
    )
    console.rule("artefacts")
    for name, path in [
        ("images", output / "train"),
        ("model", model),
        ("embeddings", emb),
        ("noisy embeddings + truth", noisy_path),
        ("cleaned (auto thresholds)", output / "cleaned"),
        ("cleaned (paper's)", output / "cleaned-paper"),
        ("search log", output / "search" / "trials.jsonl"),
        ("search plots", output / "search"),
        ("re-trained best", output / "search" / "retrained.json"),
    ]:
        console.print(f"  {name:<26} {path}")
    return {"cleaning": m, "search": summary}
