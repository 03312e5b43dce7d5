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
from faceclean.data.store import atomic_path
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


# What a config.json read back may declare: the train CLI's ranges, with bounds where an
# absurd value (a crafted or hand-edited file) would allocate terabytes building the model.
_INT_FIELDS = {"epochs": (1, 2**31 - 1), "embedding_size": (1, 65536), "input_size": (32, 1024)}
_SCALE_FIELDS = {"width": 64.0, "depth": 64.0}


def config_problem(cfg: TrainConfig) -> str | None:
    """What is wrong with the values of a config read from a file that the loading code
    trusts (types and ranges), or None."""

    def is_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    for name, (lo, hi) in _INT_FIELDS.items():
        v = getattr(cfg, name)
        if not (is_int(v) and lo <= v <= hi):
            return f"{name} {v!r} is not an integer in [{lo}, {hi}]"
    if cfg.max_steps is not None and not (is_int(cfg.max_steps) and cfg.max_steps >= 1):
        return f"max_steps {cfg.max_steps!r} is not null or an integer >= 1"
    for name, hi in _SCALE_FIELDS.items():
        v = getattr(cfg, name)
        if not (isinstance(v, int | float) and not isinstance(v, bool) and 0 < v <= hi):
            return f"{name} {v!r} is not a number in (0, {hi:g}]"
    if (
        not isinstance(cfg.backbone, str)
        or not isinstance(cfg.preset, str)
        or cfg.preset not in PRESETS
    ):
        return f"backbone {cfg.backbone!r} / preset {cfg.preset!r} unknown"
    return None


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


def read_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict:
    """A run's ``checkpoint.pt`` loaded with ``torch.load(weights_only=True)``: tensors,
    numbers, strings, lists and dicts only, so a crafted file cannot run code here. A file
    that holds anything else (or is no checkpoint at all) is a one-line error naming it."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0]
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            # torch's message is pages long; its first line names the refused global
            first = "it holds Python objects that weights_only loading refuses: " + first
        raise FacecleanError(
            f"cannot load the checkpoint safely ({type(e).__name__}: {first[:200]})", path
        ) from None
    if not isinstance(state, dict) or not {"model", "num_classes"} <= set(state):
        raise FacecleanError("not a faceclean training checkpoint", path)
    return state


def run_progress(state: dict, cfg: TrainConfig) -> tuple[bool, str]:
    """(finished, 'epoch e of E') of a run: finished when every epoch ran or ``max_steps``
    was reached. A time-sliced or killed run has a valid checkpoint that is not finished."""
    epoch, step = int(state.get("epoch", 0)), int(state.get("step", 0))
    done = epoch >= cfg.epochs or (cfg.max_steps is not None and step >= cfg.max_steps)
    return done, f"epoch {epoch} of {cfg.epochs}"


def load_run(
    run_dir: str | Path, device: str = "cpu", require_finished: bool = False
) -> tuple[nn.Module, TrainConfig]:
    """The trained backbone (eval mode) and its config from a run folder.

    ``require_finished`` refuses a run whose training has not ended (a killed or
    time-sliced run), so that nothing exports or scores a half-trained model as if final.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "checkpoint.pt").is_file():
        raise FacecleanError("no checkpoint.pt: not a finished `faceclean train` run", run_dir)
    if not (run_dir / "config.json").is_file():
        raise FacecleanError("no config.json: not a `faceclean train` run", run_dir)
    try:
        raw = json.loads((run_dir / "config.json").read_text())
        if not isinstance(raw, dict):  # `[]` or `3` parse, but are no config
            raise ValueError(f"a JSON {type(raw).__name__}, not an object")
        raw["step_milestones"] = tuple(raw.get("step_milestones", (0.5, 0.75)))
        cfg = TrainConfig(**raw)
    except (ValueError, TypeError) as e:
        raise FacecleanError(f"unreadable config.json ({e})", run_dir) from None
    bad = config_problem(cfg)
    if bad:
        raise FacecleanError(f"config.json has a bad value: {bad}", run_dir)
    state = read_checkpoint(run_dir / "checkpoint.pt", device)
    if require_finished:
        done, where = run_progress(state, cfg)
        if not done:
            raise FacecleanError(
                f"training stopped at {where}: resume it with the same `faceclean train` "
                "command first (or pass --unfinished to use it as it is)",
                run_dir,
            )
    # Only the backbone: the head of a 2M-identity run is a 4 GB matrix nobody needs here.
    try:
        model = build_backbone(cfg)
    except (TypeError, ValueError) as e:  # a value of another type (width "x", size null)
        raise FacecleanError(f"config.json has a bad value ({str(e)[:120]})", run_dir) from None
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as e:  # a config.json from another run
        first = str(e).strip().splitlines()[0][:120]
        raise FacecleanError(
            f"checkpoint.pt does not match config.json (another run's config?): {first}",
            run_dir,
        ) from None
    return model.eval(), cfg


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of ``metrics.jsonl``, one per epoch, in order (empty if none yet)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def record_metrics(run_dir: str | Path, record: dict) -> None:
    """Write an epoch's record into ``metrics.jsonl``: the file is rewritten atomically
    with every earlier epoch's line and this one, so an epoch re-run after a kill (its
    line written, its checkpoint not) replaces its line instead of adding a second, and a
    kill mid-write leaves the previous file whole."""
    kept = [r for r in read_metrics(run_dir) if r.get("epoch", 0) < record["epoch"]]
    _write_metrics(run_dir, [*kept, record])


def trim_metrics(run_dir: str | Path, epoch: int) -> None:
    """On resume from a checkpoint after ``epoch``: drop lines of later epochs (written
    before a kill that came ahead of their checkpoint), which would claim progress the
    checkpoint does not hold."""
    records = read_metrics(run_dir)
    kept = [r for r in records if r.get("epoch", 0) <= epoch]
    if len(kept) != len(records):
        _write_metrics(run_dir, kept)


def _write_metrics(run_dir: str | Path, records: list[dict]) -> None:
    with atomic_path(Path(run_dir) / "metrics.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
