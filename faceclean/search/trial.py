"""One real search trial: clean with the sampled thresholds, train the sampled backbone
with the sampled unified loss, score ACC on the validation identities.

Cleaning depends only on (tau_intra, tau_inter) and the precomputed embeddings, so it is
cached by that pair and shared by every trial that samples it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from faceclean.cleaning.clean import clean, read_clean_summary
from faceclean.data.store import read_metadata
from faceclean.training.backbones import count_macs
from faceclean.training.run import TrainConfig, build_backbone
from faceclean.training.train import evaluate_run, train
from faceclean.training.verification import FARS


@dataclass
class FaceTrial:
    """A picklable trial function ``(combo, seed) -> {acc, macs, ...}``.

    Args:
        embeddings: the embedding store of the (noisy) training set.
        val: validation identities (folder or list) for TAR@FAR.
        work_dir: where cleanings (``clean/``) and trial runs (``trials/``) go.
        data_root: image root of the training set [default: recorded in the embeddings].
        train_kwargs: TrainConfig fields shared by every trial (input size, epochs, ...).
        fars: FARs for ACC; the paper's 1e-3, 1e-4, 1e-5 by default.
    """

    embeddings: str
    val: str
    work_dir: str
    data_root: str | None = None
    train_kwargs: dict = field(default_factory=dict)
    fars: tuple = FARS

    def clean_list(self, tau_intra: float, tau_inter: float) -> Path:
        out = Path(self.work_dir) / "clean" / f"{tau_intra:.4f}_{tau_inter:.4f}"
        if not (out / "summary.json").exists():
            clean(self.embeddings, out, tau_intra, tau_inter)
        return out / "clean.parquet"

    def config(self, combo: dict, seed: int) -> TrainConfig:
        root = self.data_root or read_metadata(self.embeddings).get("dataset")
        loss = {k: combo[k] for k in ("m1", "m2", "m3", "s_p", "s_n")}
        return TrainConfig(
            clean_list=str(self.clean_list(combo["tau_intra"], combo["tau_inter"])),
            data_root=root,
            width=combo["width"],
            depth=combo["depth"],
            loss="unified",
            loss_kwargs=loss,
            seed=seed,
            **self.train_kwargs,
        )

    def __call__(self, combo: dict, seed: int, run_name: str | None = None) -> dict:
        cfg = self.config(combo, seed)
        run = Path(self.work_dir) / "trials" / (run_name or f"seed{seed}")
        summary = train(cfg, run)
        scores = evaluate_run(run, self.val, self.fars)
        tars = [scores[f"tar@far={f:g}"] for f in self.fars]
        weights = (0.5, 0.25, 0.25) if len(tars) == 3 else [1 / len(tars)] * len(tars)
        model = build_backbone(cfg)
        clean_summary = read_clean_summary(Path(cfg.clean_list).parent)
        return {
            "acc": float(sum(w * t for w, t in zip(weights, tars, strict=True))),
            "tars": {f"{f:g}": t for f, t in zip(self.fars, tars, strict=True)},
            "macs": count_macs(model),
            "params": sum(p.numel() for p in model.parameters()),
            "clean_rows": clean_summary["clean_rows"],
            "clean_classes": clean_summary["clean_classes"],
            "train_steps": summary["steps"],
            "run_dir": str(run),
        }
