"""The training checkpoint: one file that resumes a run exactly, on any number of processes.

``checkpoint.pt`` holds only tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)`` (no pickled objects). It holds the backbone, the *whole*
head (a sharded head's blocks gathered from every rank, with its buffers: Partial FC's draw
count, Search-Softmax's ``a``, AdaFace's statistics), the optimiser with the head weight's
momentum gathered the same way, the epoch and step, and torch's RNG states. Loading cuts the
head and its momentum back to this rank's block, so a run saved on 2 processes resumes on 1
or 3. Every other random choice of training (data order, flips, Random-Softmax's ``a``,
Partial FC's sample) is keyed by (seed, epoch, index or draw), not carried as state.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from faceclean.data.store import atomic_path
from faceclean.errors import FacecleanError
from faceclean.training.distributed import gather_rows_to_all, world_and_rank


def _head_param_index(model: nn.Module) -> int:
    """Position of the head's weight among the optimiser's parameters (model's first)."""
    return len(list(model.parameters()))


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    head: nn.Module,
    optimiser: torch.optim.Optimizer,
    **extra: int | float | str,
) -> None:
    """Gather the head (collective: every rank calls it) and write on rank 0, atomically."""
    head_state = head.state_dict()
    head_state["weight"] = gather_rows_to_all(head.weight, head.num_classes).cpu()
    opt_state = optimiser.state_dict()
    index = _head_param_index(model)
    entry = opt_state["state"].get(index)
    if entry is not None and entry.get("momentum_buffer") is not None:
        # state_dict() shares tensors with the live optimiser: replace, do not modify.
        full = gather_rows_to_all(entry["momentum_buffer"], head.num_classes)
        opt_state["state"] = {**opt_state["state"], index: {**entry, "momentum_buffer": full}}
    if world_and_rank()[1] != 0:
        return
    with atomic_path(path) as tmp:
        torch.save(
            {
                "model": model.state_dict(),
                "head": head_state,
                "optimiser": opt_state,
                "rng": _rng_state(),
                "num_classes": head.num_classes,
                **extra,
            },
            tmp,
        )


def load_checkpoint(
    path: str | Path,
    model: nn.Module,
    head: nn.Module,
    optimiser: torch.optim.Optimizer | None,
    device: torch.device | str = "cpu",
) -> dict:
    """Restore a checkpoint into this rank's model, head block and optimiser; returns the
    whole checkpoint (epoch, step, ...)."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise FacecleanError(
            f"cannot read the checkpoint ({type(e).__name__}: {first})", path
        ) from None
    a, b = head.class_start, head.class_end
    if len(state["head"]["weight"]) != head.num_classes:
        raise FacecleanError(
            f"the checkpoint's head has {len(state['head']['weight'])} classes, "
            f"this run {head.num_classes}",
            path,
        )
    model.load_state_dict(state["model"])
    head.load_state_dict({**state["head"], "weight": state["head"]["weight"][a:b]})
    if optimiser is not None:
        opt_state = state["optimiser"]
        index = _head_param_index(model)
        entry = opt_state["state"].get(index)
        if entry is not None and entry.get("momentum_buffer") is not None:
            opt_state["state"][index] = {**entry, "momentum_buffer": entry["momentum_buffer"][a:b]}
        optimiser.load_state_dict(opt_state)
    torch.set_rng_state(state["rng"]["torch"].cpu())
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["rng"]["cuda"]])
    return state
