"""A training run folder: its config (``config.json``), how to build its model, and how to
load the finished model (``checkpoint.pt``).

Kept apart from the training loop so that whatever only reads a finished run (the teacher
filter, export, evaluation) does not import the loop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from faceclean.data.preprocess import PRESETS, Preprocessing
from faceclean.errors import FacecleanError
from faceclean.training.backbones import create_backbone
from faceclean.training.losses import create_head


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved as ``config.json`` in the run folder)."""

    clean_list: str
    data_root: str | None = None
    backbone: str = "mobilefacenet"
    width: float = 1.0
    depth: float = 1.0
    embedding_size: int = 128
    input_size: int = 112
    loss: str = "unified"
    loss_kwargs: dict = field(default_factory=dict)
    sample_rate: float = 1.0
    teacher: str | None = None
    teacher_topk: int = 5
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.0
    schedule: str = "cosine"
    step_milestones: tuple[float, ...] = (0.5, 0.75)
    seed: int = 0
    workers: int = 2
    device: str = "auto"
    preset: str = "insightface"


def build_backbone(cfg: TrainConfig) -> nn.Module:
    """The configured backbone, freshly initialised from torch's current RNG state."""
    return create_backbone(
        cfg.backbone,
        width=cfg.width,
        depth=cfg.depth,
        embedding_size=cfg.embedding_size,
        input_size=cfg.input_size,
    )


def build(cfg: TrainConfig, num_classes: int) -> tuple[nn.Module, nn.Module]:
    model = build_backbone(cfg)
    head = create_head(cfg.loss, cfg.embedding_size, num_classes, **cfg.loss_kwargs)
    return model, head


def spec_for(cfg: TrainConfig) -> Preprocessing:
    p = PRESETS[cfg.preset]
    return Preprocessing(p["mean"], p["std"], p["channels"], cfg.input_size, cfg.input_size)


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[nn.Module, TrainConfig]:
    """The trained backbone (eval mode) and its config from a run folder."""
    run_dir = Path(run_dir)
    if not (run_dir / "checkpoint.pt").is_file():
        raise FacecleanError("no checkpoint.pt: not a finished `faceclean train` run", run_dir)
    raw = json.loads((run_dir / "config.json").read_text())
    raw["step_milestones"] = tuple(raw.get("step_milestones", (0.5, 0.75)))
    cfg = TrainConfig(**raw)
    state = torch.load(run_dir / "checkpoint.pt", map_location=device, weights_only=False)
    model, _ = build(cfg, state["num_classes"])
    model.load_state_dict(state["model"])
    return model.eval(), cfg
