"""Collectives for the model-parallel (sharded) classification head.

The sharded head follows the Partial FC v2 design (InsightFace arcface_torch): rank r of
``world`` holds a contiguous block of class centres, the embeddings and labels of the
global batch are all-gathered, and the softmax normaliser is built from an all-reduced max
and sum. Gradient convention used throughout: every rank computes the same replicated
global loss L and back-propagates ``L / world``; so the backward of an all-reduced sum is
the all-reduced sum of the incoming gradients, and the backward of the all-gather is the
sum over ranks of each rank's gradient for this rank's rows (a reduce-scatter). With that,
each rank's embedding gradient is exactly dL/d(its embeddings) and each shard's weight
gradient is exactly dL/d(its rows) of a single-process run over the global batch.

Every function is the identity when torch.distributed is not initialised (one process).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_and_rank() -> tuple[int, int]:
    """(world size, rank), (1, 0) without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def shard_range(num_classes: int, rank: int, world: int) -> tuple[int, int]:
    """[start, end) of the contiguous block of classes rank ``rank`` holds: the first
    ``num_classes % world`` ranks hold one class more."""
    base, extra = divmod(num_classes, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def all_reduce_sum(x: torch.Tensor, grad: bool = True) -> torch.Tensor:
    """Sum of ``x`` over ranks, differentiable (see the module's gradient convention)."""
    if world_and_rank()[0] == 1:
        return x
    if grad and x.requires_grad:
        return _AllReduceSum.apply(x)
    x = x.detach().clone()
    dist.all_reduce(x)
    return x


def all_reduce_max(x: torch.Tensor) -> torch.Tensor:
    """Element-wise max over ranks (no gradient: used only as a numerical shift)."""
    x = x.detach().clone()
    if world_and_rank()[0] > 1:
        dist.all_reduce(x, op=dist.ReduceOp.MAX)
    return x


class _AllGatherPadded(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        world, rank = world_and_rank()
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.rows = rank, len(x)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        # Every rank holds a gradient for every rank's rows; sum them, keep ours.
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def all_gather_rows(x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Concatenate every rank's rows of ``x`` (rank order; ranks may hold different numbers
    of rows, e.g. after the teacher filter) and return it with each rank's row count.
    Differentiable: the gradient reaching this rank is the sum over ranks for its rows."""
    world, _ = world_and_rank()
    if world == 1:
        return x, [len(x)]
    counts = torch.tensor([len(x)], dtype=torch.long, device=x.device)
    gathered = [torch.empty_like(counts) for _ in range(world)]
    dist.all_gather(gathered, counts)
    sizes = [int(c) for c in gathered]
    most = max(sizes)
    padded = torch.cat([x, x.new_zeros((most - len(x), *x.shape[1:]))]) if len(x) < most else x
    if x.requires_grad:
        full = _AllGatherPadded.apply(padded)
    else:
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded.contiguous())
        full = torch.cat(parts)
    keep = torch.cat([torch.arange(r * most, r * most + n) for r, n in enumerate(sizes)])
    return full[keep.to(full.device)], sizes


def gather_rows_to_all(x: torch.Tensor, num_rows: int) -> torch.Tensor:
    """The full [num_rows, ...] tensor from every rank's contiguous block of rows (no
    gradient): for saving a sharded head or its optimiser state as one tensor."""
    world, _ = world_and_rank()
    if world == 1:
        return x.detach().clone()
    sizes = [b - a for a, b in (shard_range(num_rows, r, world) for r in range(world))]
    most = max(sizes)
    padded = torch.cat([x.detach(), x.new_zeros((most - len(x), *x.shape[1:]))])
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)])
