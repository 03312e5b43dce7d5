"""`faceclean train`: train a backbone with a margin-loss head on a clean list.

Reads top to bottom: load the list -> dataset -> backbone + head -> SGD with warm-up and a
cosine or step schedule -> epochs (checkpoint after each, atomically) -> embeddings of the
validation set -> TAR@FAR. Deterministic given the seed (the data order and every flip
are drawn from the seed, the epoch and the sample index, not from worker state), and
resumable: run the same command on the same run folder and it continues from the last
checkpoint. On CUDA it trains in bfloat16 autocast with channels-last; under ``torchrun``
it wraps the model in DistributedDataParallel.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from faceclean.data.datasets import open_dataset, read_image_bytes
from faceclean.data.preprocess import load_pixels, normalise
from faceclean.data.store import atomic_path
from faceclean.errors import FacecleanError
from faceclean.progress import RowProgress
from faceclean.training.backbones import count_macs
from faceclean.training.checkpoint import load_checkpoint, save_checkpoint
from faceclean.training.dataset import FaceImages, read_clean_list
from faceclean.training.losses import create_head
from faceclean.training.run import (
    TrainConfig,
    build_backbone,
    load_run,
    record_metrics,
    spec_for,
    trim_metrics,
)
from faceclean.training.teacher import TeacherFilter


class SkippedImages:
    """Training images that cannot be read: each is skipped (the data loader hands it on
    with label ``-1 - index``), counted once, listed with its reason in the run folder's
    ``skipped_images.tsv``, and more than ``max_share`` of the list is an error naming one.
    """

    def __init__(self, run_dir: Path, clean_list, paths, root, spec, max_share: float):
        if not 0.0 <= max_share <= 1.0:
            raise FacecleanError(f"--max-failures is a share in [0, 1], not {max_share}")
        self.run_dir, self.clean_list, self.paths = Path(run_dir), clean_list, paths
        self.root, self.spec, self.max_share = Path(root), spec, max_share
        self.found: dict[int, str] = {}

    def _reason(self, i: int) -> str:
        from faceclean.data.preprocess import load_pixels

        try:  # read again here: the worker that failed cannot send its exception along
            load_pixels(read_image_bytes(self.root, self.paths[i]), self.spec)
        except Exception as e:
            return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        return "unreadable in a data-loading worker"

    def add(self, indices) -> None:
        """Count these (dataset indices); raise once past the limit."""
        for i in indices:
            if i not in self.found:
                self.found[i] = self._reason(i)
        if len(self.found) > self.max_share * len(self.paths):
            i = min(self.found)
            raise FacecleanError(
                f"{len(self.found)} of {len(self.paths)} training images could not be read, "
                f"more than --max-failures {self.max_share:g}; e.g. {self.paths[i]}: "
                f"{self.found[i]}",
                self.clean_list,
            )

    def write(self) -> None:
        """``skipped_images.tsv`` (path, reason), written atomically when any was found."""
        if self.found:
            with atomic_path(self.run_dir / "skipped_images.tsv") as tmp:
                tmp.write_text(
                    "".join(
                        f"{self.paths[i]!s}\t{self.found[i]}\n".replace("\r", " ")
                        for i in sorted(self.found)
                    )
                )


def pick_device(device: str) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        raise FacecleanError("--device cuda asked for, but torch sees no CUDA GPU")
    if device in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def lr_at(step: int, total: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """Learning-rate multiplier: linear warm-up, then cosine to 0 or steps of x0.1."""
    warm = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    return 0.1 ** sum(progress >= m for m in cfg.step_milestones)


@torch.no_grad()
def embed_images(
    model: nn.Module,
    dataset: FaceImages,
    batch_size: int = 128,
    device: torch.device | None = None,
    flip: bool = False,
    workers: int = 0,
) -> np.ndarray:
    """Unit embeddings [N, d] of a dataset, in order (flip: image + mirror summed), on
    ``device`` (default: the model's), images decoded by ``workers`` loader processes."""
    device = device or next(model.parameters()).device
    model.eval()
    out = []
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )
    for x, _ in loader:
        x = x.to(device, non_blocking=True)
        f = model(x)
        if flip:
            f = f + model(torch.flip(x, dims=[3]))
        out.append(torch.nn.functional.normalize(f.float()).cpu().numpy())
    return np.concatenate(out)


def train(
    cfg: TrainConfig,
    run_dir: str | Path,
    progress: bool = False,
    stop_after_epochs: int | None = None,
    max_failures: float = 0.01,
) -> dict:
    """Train (or resume) into ``run_dir``: ``config.json``, ``checkpoint.pt`` (model, head,
    optimiser, epoch, step), ``metrics.jsonl`` (one line per epoch). Returns the summary.

    ``stop_after_epochs`` ends this call after that many epochs (for time-sliced jobs);
    calling again resumes, and the result equals one uninterrupted run.

    A list with fewer images than one batch is an error (nothing would be trained). An
    image that cannot be read is skipped and listed in ``skipped_images.tsv``; more than
    ``max_failures`` (a share of the list) is an error."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    paths, labels, root = read_clean_list(cfg.clean_list, cfg.data_root)
    num_classes = int(labels.max()) + 1
    missing = [p for p in paths[:100_000] if "#" not in p and not (Path(root) / p).is_file()]
    if missing:
        raise FacecleanError(
            f"{len(missing)} image(s) of the list are missing, e.g. {Path(root) / missing[0]} "
            "(image paths are relative to --data, the image root)",
            cfg.clean_list,
        )
    world = int(os.environ.get("WORLD_SIZE", 1))
    _check_head_fits(num_classes, cfg.embedding_size, world, cfg.clean_list)
    if len(paths) < cfg.batch_size * world:
        raise FacecleanError(
            f"{len(paths)} image(s), fewer than one batch of {cfg.batch_size * world}: "
            "nothing would be trained; lower --batch-size",
            cfg.clean_list,
        )
    distributed = world > 1
    device = pick_device(cfg.device)
    own_group = distributed and not torch.distributed.is_initialized()
    if own_group:
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = torch.distributed.get_rank() if distributed else 0
    torch.manual_seed(cfg.seed)  # identical initial weights for a given seed
    # Also validates W, D and the loss parameters. Under torchrun the head is model-parallel:
    # this rank holds a block of the class centres (the same values as one process's head).
    model = build_backbone(cfg)
    shard = {"rank": rank, "world": world} if distributed else {}
    head = create_head(cfg.loss, cfg.embedding_size, num_classes, **cfg.loss_kwargs, **shard)
    if cfg.sample_rate < 1:
        head.set_sampling(cfg.sample_rate, cfg.seed)
    config_path = run_dir / "config.json"
    saved = json.loads(json.dumps(asdict(cfg)))
    if config_path.exists() and (old := json.loads(config_path.read_text())) != saved:
        differ = sorted(k for k in {*old, *saved} if old.get(k) != saved.get(k))
        raise FacecleanError(
            f"holds a run with another configuration ({', '.join(differ)} differ); "
            "use a new folder, or --overwrite to start this one afresh",
            run_dir,
        )
    with atomic_path(config_path) as tmp:
        tmp.write_text(json.dumps(saved, indent=2))

    model.to(device)
    head.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    teacher = (
        TeacherFilter(cfg.teacher, cfg.teacher_topk, num_classes, cfg.input_size, device)
        if cfg.teacher
        else None
    )
    params = list(model.parameters()) + list(head.parameters())
    optimiser = torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    dataset = FaceImages(paths, labels, root, spec_for(cfg), train=True, seed=cfg.seed)
    skipped = SkippedImages(run_dir, cfg.clean_list, paths, root, spec_for(cfg), max_failures)
    # Under torchrun each process sees 1/world of the data per epoch (batch is per process).
    steps_per_epoch = max(1, len(dataset) // (cfg.batch_size * world))
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    epoch, step = 0, 0
    ckpt = run_dir / "checkpoint.pt"
    if ckpt.exists():
        state = load_checkpoint(ckpt, model, head, optimiser, device)
        epoch, step = state["epoch"], state["step"]
    if not distributed or rank == 0:
        trim_metrics(run_dir, epoch)
    net = nn.parallel.DistributedDataParallel(model) if distributed else model
    t0 = time.perf_counter()
    bar = RowProgress(progress, "train", total, step, unit="step")
    last_epoch = (
        cfg.epochs if stop_after_epochs is None else min(cfg.epochs, epoch + stop_after_epochs)
    )
    while epoch < last_epoch and step < total:
        dataset.epoch = epoch
        if hasattr(head, "set_epoch"):
            head.set_epoch(epoch)
        order = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        if distributed:
            sampler = torch.utils.data.DistributedSampler(dataset, seed=cfg.seed)
            sampler.set_epoch(epoch)
            loader = DataLoader(
                dataset, cfg.batch_size, sampler=sampler, drop_last=True, num_workers=cfg.workers
            )
        else:
            loader = DataLoader(
                dataset,
                cfg.batch_size,
                shuffle=True,
                generator=order,
                drop_last=True,
                num_workers=cfg.workers,
            )
        net.train()
        head.train()
        losses, seen, passed, t_epoch = [], 0, 0, time.perf_counter()
        for x, y in loader:
            if step >= total:
                break
            for g in optimiser.param_groups:
                g["lr"] = cfg.lr * lr_at(step, total, steps_per_epoch, cfg)
            if (y < 0).any():  # unreadable images: skip them, count them, stop past the limit
                skipped.add((-1 - y[y < 0]).tolist())
                x, y = x[y >= 0], y[y >= 0]
                if len(y) < 2 and not distributed:  # BatchNorm needs two samples
                    step += 1
                    bar.advance(1)
                    continue
            x, y = x.to(device, non_blocking=True), y.to(device)
            if device.type == "cuda":
                x = x.to(memory_format=torch.channels_last)
            with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
                emb = net(x)
            if distributed:
                # The head returns each rank dL/d(its embeddings) of the global loss; DDP
                # then averages the backbone gradients over ranks, so undo its 1/world.
                emb.register_hook(lambda g: g * world)
            if teacher is not None:
                keep = teacher.mask(x, y)
                passed += int(keep.sum())
                kept = keep.sum()
                if distributed:  # the head is collective: skip only when every rank has none
                    torch.distributed.all_reduce(kept)
                if not kept:  # nothing the teacher trusts: no update this step
                    seen += len(y)
                    step += 1
                    bar.advance(1)
                    continue
                emb, y = emb[keep], y[keep]
            loss = head(emb.float(), y)
            if not torch.isfinite(loss):
                raise FacecleanError(
                    f"loss became {loss.item()} at step {step} (diverged); "
                    "lower --lr or the margins",
                    run_dir,
                )
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
            seen += len(x)
            step += 1
            bar.advance(1)
        epoch += 1
        record = {
            "epoch": epoch,
            "step": step,
            "loss": float(np.mean(losses)) if losses else None,
            "images_per_second": seen / max(time.perf_counter() - t_epoch, 1e-9),
            "lr": optimiser.param_groups[0]["lr"],
        }
        if teacher is not None:
            record["teacher_kept"] = passed / max(seen, 1)
        if skipped.found:
            record["skipped_images"] = len(skipped.found)
        if not distributed or torch.distributed.get_rank() == 0:
            # Before the checkpoint: a kill in between re-runs this epoch, whose line then
            # replaces this one (never two lines for one epoch).
            record_metrics(run_dir, record)
            skipped.write()
        # Every rank takes part (the head's blocks are gathered); rank 0 writes.
        save_checkpoint(ckpt, model, head, optimiser, epoch=epoch, step=step)
    bar.close()
    if own_group:
        torch.distributed.destroy_process_group()
    return {
        "run_dir": str(run_dir),
        "epochs": epoch,
        "steps": step,
        "num_classes": num_classes,
        "images": len(dataset),
        "macs": count_macs(model),
        "seconds": time.perf_counter() - t0,
    }


def evaluate_run(
    run_dir: str | Path,
    val: str | Path,
    fars=(1e-3, 1e-4, 1e-5),
    flip: bool = True,
    device: str | None = None,
    workers: int | None = None,
) -> dict:
    """TAR@FAR (all pairs) of a run's model on a validation set given as identities, on
    the run's training device and with its loader workers unless ``device``/``workers``
    say otherwise (on a GPU the whole loop, evaluation included, stays on the GPU)."""
    from faceclean.training.verification import evaluate_embeddings

    model, cfg = load_run(run_dir)
    dev = pick_device(device or cfg.device)
    ds = open_dataset(val)
    images = FaceImages(ds.paths.to_pylist(), ds.labels, ds.root, spec_for(cfg), train=False)
    n_workers = cfg.workers if workers is None else workers
    emb = embed_images(model.to(dev), images, device=dev, flip=flip, workers=n_workers)
    return evaluate_embeddings(emb, ds.labels, fars)


def evaluate_run_bin(run_dir: str | Path, bin_path: str | Path) -> dict:
    """InsightFace ``.bin`` 10-fold accuracy (with flip) of a run's model."""
    from faceclean.training.verification import evaluate_bin

    model, cfg = load_run(run_dir)
    spec = spec_for(cfg)
    dev = pick_device(cfg.device)  # the training device, as in evaluate_run
    model.to(dev)

    @torch.no_grad()
    def embed(images: list[bytes], flip: bool) -> np.ndarray:
        out = []
        for s in range(0, len(images), 128):
            pixels = np.stack([load_pixels(b, spec)[0] for b in images[s : s + 128]])
            x = torch.from_numpy(normalise(pixels, spec)).to(dev)
            f = model(x) + (model(torch.flip(x, dims=[3])) if flip else 0)
            out.append(torch.nn.functional.normalize(f).cpu().numpy())
        return np.concatenate(out)

    return evaluate_bin(bin_path, embed)


def _check_head_fits(num_classes: int, embedding_size: int, world: int, where) -> None:
    """Refuse a classifier head that cannot fit in this machine's memory before allocating it.

    The head has one row per label up to the largest, so one stray huge label (say 10**9 in
    a list of a dozen images) would otherwise hang the run allocating terabytes. The rows are
    counted three times (weight, gradient, momentum), float32, split over ``world`` ranks;
    a real subset of a larger list (labels up to its class count) still trains."""
    rows = -(-num_classes // world)
    need = rows * embedding_size * 4 * 3
    try:
        have = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not reported on this platform
        return
    if need > have:
        raise FacecleanError(
            f"its largest label is {num_classes - 1}: a head of {num_classes} classes x "
            f"{embedding_size} needs {need / 2**30:.0f} GiB per process (weights, gradients, "
            f"momentum), more than this machine's {have / 2**30:.0f} GiB; labels must be "
            "0..K-1 class numbers (renumber them, or train over more processes)",
            where,
        )
