"""Margin-based classification heads, picked by name. Each is an ``nn.Module`` that owns
the class-weight matrix (or, sharded, a contiguous block of it) and maps (raw embeddings
[N, d], labels [N]) to a scalar loss: the mean over the (global) batch.

Logits are cosines between the L2-normalised embedding and class weights. The unified
scale-aware margin loss (DESIGN.md) is

    L = -log( e^{s_p f(θ_y)} / (e^{s_p f(θ_y)} + Σ_{k≠y} e^{s_n cos θ_k}) ),
    f(θ) = cos(m1 θ + m2) - m3,

with true gradients through θ = arccos(cos θ_y). Outside m1 θ + m2 ∈ [0, π] the cosine
would turn back up, so f is continued linearly with slope -m1 there: f stays continuous
and strictly decreasing in θ for every m1 > 0.

Every head is written once for both layouts. Built with ``rank``/``world`` (under
torchrun) a head holds classes ``shard_range(C, rank, world)``; its forward all-gathers the
embeddings and labels of the global batch, applies the margin to the positive logit on the
rank that holds it (cos θ_y reaches every rank by an all-reduced sum), and normalises the
softmax with an all-reduced max and sum (``faceclean.training.distributed``). With one
process every collective is the identity. Partial FC sampling (``set_sampling``) happens
per shard: positives always kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from faceclean.errors import FacecleanError
from faceclean.training.distributed import (
    all_gather_rows,
    all_reduce_max,
    all_reduce_sum,
    shard_range,
)

HEADS: dict[str, Callable[..., nn.Module]] = {}
_EPS = 1e-7
CHUNK = 65536  # rows per independently seeded block: values do not depend on the sharding


def register(name: str):
    def wrap(fn):
        HEADS[name] = fn
        return fn

    return wrap


def create_head(name: str, embedding_size: int, num_classes: int, **kwargs) -> nn.Module:
    """Instantiate a registered head by name; unknown keyword arguments are an error.
    ``rank``/``world`` (keywords) build rank ``rank``'s shard of a model-parallel head."""
    if name not in HEADS:
        raise FacecleanError(f"unknown loss {name!r}; choose from {', '.join(HEADS)}")
    return HEADS[name](embedding_size=embedding_size, num_classes=num_classes, **kwargs)


def _seeded(*key: int) -> torch.Generator:
    """A generator keyed by integers (no state carried between calls: resumable)."""
    seed = int(np.random.SeedSequence([int(k) for k in key]).generate_state(2, np.uint32)[0])
    return torch.Generator().manual_seed(seed)


def _rows(key: tuple[int, ...], start: int, end: int, total: int, fill: Callable):
    """Rows [start, end) of a per-row random draw over ``total`` rows done in blocks of
    CHUNK rows, each block from its own generator keyed by ``key`` and the block number:
    any sharding yields the same values as one process."""
    out = []
    for k in range(start // CHUNK, (end - 1) // CHUNK + 1 if end > start else 0):
        lo = k * CHUNK
        block = fill(_seeded(*key, k), min(CHUNK, total - lo))
        out.append(block[max(start - lo, 0) : end - lo])
    return torch.cat(out) if out else fill(_seeded(*key), 0)


class CosineHead(nn.Module):
    """Holds the class weights (this rank's block) and implements the shared forward;
    subclasses give ``logits`` (the margin) or override ``per_sample_loss``."""

    def __init__(self, embedding_size: int, num_classes: int, rank: int = 0, world: int = 1):
        super().__init__()
        if num_classes < 2:
            raise FacecleanError(f"training needs at least 2 classes, got {num_classes}")
        if num_classes < world:
            raise FacecleanError(f"{num_classes} classes cannot be split over {world} ranks")
        self.num_classes, self.rank, self.world = num_classes, rank, world
        self.class_start, self.class_end = shard_range(num_classes, rank, world)
        # One draw from torch's global RNG keeps the head determined by torch.manual_seed.
        seed = int(torch.randint(0, 2**62, ()))
        d = embedding_size
        rows = _rows((seed,), self.class_start, self.class_end, num_classes, _normal_fill(d))
        self.weight = nn.Parameter(rows.to(torch.get_default_dtype()))
        self.sample_rate, self.sample_seed = 1.0, 0
        # Draws of Partial FC so far: the sampling is keyed by it (exactly resumable).
        self.register_buffer("draws", torch.zeros((), dtype=torch.long))

    def set_sampling(self, sample_rate: float, seed: int = 0) -> CosineHead:
        """Partial FC: each step uses a ``sample_rate`` share of all classes (positives
        included) on every shard: the positives of the global batch plus random
        negatives up to ``int(sample_rate * classes on the shard)``; when the batch has
        more identities than that, all positives and no negatives."""
        if not 0 < sample_rate <= 1:
            raise FacecleanError(f"sample rate {sample_rate} is outside (0, 1]")
        self.sample_rate, self.sample_seed = float(sample_rate), int(seed)
        return self

    def sampled_classes(self, local_labels: torch.Tensor) -> torch.Tensor:
        """Sorted local indices of the classes this step uses (all positives kept)."""
        n_local = self.class_end - self.class_start
        positive = torch.unique(local_labels)
        n = max(len(positive), int(self.sample_rate * n_local), 1)
        key = (self.sample_seed, int(self.draws))
        score = _rows(key, self.class_start, self.class_end, self.num_classes, _uniform_fill)
        score[positive.cpu()] = 2.0
        return torch.topk(score, min(n, n_local)).indices.sort().values

    def cosines(self, embeddings: torch.Tensor, weight: torch.Tensor):
        return F.linear(F.normalize(embeddings), F.normalize(weight)).clamp(-1, 1)

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mean loss over the global batch (this rank's rows of ``embeddings``/``labels``);
        ``weight`` replaces this rank's class weights (for gradient checks)."""
        emb, _ = all_gather_rows(embeddings)
        labels, _ = all_gather_rows(labels)
        w = self.weight if weight is None else weight
        local = labels - self.class_start
        holder = (local >= 0) & (local < self.class_end - self.class_start)
        if self.sample_rate < 1:
            index = self.sampled_classes(local[holder]).to(w.device)
            if self.training:
                self.draws += 1
            remap = torch.full((len(w),), -1, dtype=torch.long, device=w.device)
            remap[index] = torch.arange(len(index), device=w.device)
            local = torch.where(holder, remap[local.clamp(0, len(w) - 1)], local)
            w = w[index]
        local = torch.where(holder, local, 0)
        cos = self.cosines(emb, w)
        is_pos = torch.zeros_like(cos, dtype=torch.bool).scatter(1, local[:, None], holder[:, None])
        own = torch.where(holder, cos.gather(1, local[:, None]).squeeze(1), 0.0)
        cos_y = all_reduce_sum(own)  # every rank needs cos θ_y for the margin
        loss = self.per_sample_loss(cos, cos_y, is_pos, emb).mean()
        if self.world == 1:
            return loss
        # Each rank back-propagates L / world (see distributed.py); the value stays L.
        return loss / self.world + (loss - loss / self.world).detach()

    def per_sample_loss(self, cos, cos_y, is_pos, embeddings) -> torch.Tensor:
        """Cross-entropy per sample [N] with the margin applied to the positive logit."""
        target, negatives = self.logits(cos, cos_y, is_pos, embeddings)
        logits = torch.where(is_pos, target[:, None], negatives)
        return log_normaliser(logits) - target

    def logits(self, cos, cos_y, is_pos, embeddings):
        """(target logit [N] of every sample, negative logits [N, C_shard]); subclasses."""
        raise NotImplementedError


def _normal_fill(d: int):
    return lambda g, n: torch.empty(n, d, dtype=torch.float32).normal_(0, 0.01, generator=g)


def _uniform_fill(g: torch.Generator, n: int) -> torch.Tensor:
    return torch.rand(n, generator=g)


def log_normaliser(logits: torch.Tensor) -> torch.Tensor:
    """log Σ_k e^{logit_k} over every shard's columns [N]: all-reduced max, then sum."""
    shift = all_reduce_max(logits.max(1).values)
    return shift + all_reduce_sum((logits - shift[:, None]).exp().sum(1)).log()


def margin_function(theta: torch.Tensor, m1: float, m2: float, m3: float) -> torch.Tensor:
    """f(θ) = cos(m1 θ + m2) - m3, continued linearly (slope -m1) where m1 θ + m2 leaves
    [0, π], so f is continuous and strictly decreasing for m1 > 0."""
    arg = m1 * theta + m2
    inside = torch.cos(arg.clamp(0, math.pi))
    below = 1 - arg  # arg < 0: continue from cos(0) = 1 downward
    above = -1 - (arg - math.pi)  # arg > π: continue from cos(π) = -1 downward
    f = torch.where(arg < 0, below, torch.where(arg > math.pi, above, inside))
    return f - m3


def _theta(cos_y: torch.Tensor) -> torch.Tensor:
    return torch.acos(cos_y.clamp(-1 + _EPS, 1 - _EPS))


class UnifiedMargin(CosineHead):
    """The scale-aware unified margin loss (m1, m2, m3, s_p, s_n).

    Presets: ArcFace (m1=1, m3=0, s_p=s_n), CosFace (m1=1, m2=0), SphereFace-style (m1>1),
    normalised softmax (m1=1, m2=m3=0). The paper's best on MS1MV2: m1 1.15, m2 0.22, m3 0,
    s_p 40, s_n 48.
    """

    def __init__(
        self, embedding_size, num_classes, m1=1.0, m2=0.5, m3=0.0, s_p=64.0, s_n=64.0, **shard
    ):
        super().__init__(embedding_size, num_classes, **shard)
        if m1 <= 0:
            raise FacecleanError(f"m1 = {m1} makes the margin function non-monotonic; m1 > 0")
        if s_p <= 0 or s_n <= 0:
            raise FacecleanError(f"scales must be positive (s_p = {s_p}, s_n = {s_n})")
        if not -1 < m2 < math.pi or not -1 < m3 < 2:
            raise FacecleanError(f"m2 = {m2} / m3 = {m3} are outside any sensible range")
        self.m1, self.m2, self.m3, self.s_p, self.s_n = m1, m2, m3, s_p, s_n

    def logits(self, cos, cos_y, is_pos, embeddings):
        target = self.s_p * margin_function(_theta(cos_y), self.m1, self.m2, self.m3)
        return target, self.s_n * cos


@register("unified")
def unified(embedding_size, num_classes, m1=1.15, m2=0.22, m3=0.0, s_p=40.0, s_n=48.0, **shard):
    return UnifiedMargin(embedding_size, num_classes, m1, m2, m3, s_p, s_n, **shard)


@register("arcface")
def arcface(embedding_size, num_classes, s=64.0, m=0.5, **shard):
    return UnifiedMargin(embedding_size, num_classes, 1.0, m, 0.0, s, s, **shard)


@register("cosface")
def cosface(embedding_size, num_classes, s=64.0, m=0.35, **shard):
    return UnifiedMargin(embedding_size, num_classes, 1.0, 0.0, m, s, s, **shard)


@register("sphereface")
def sphereface(embedding_size, num_classes, s=64.0, m=1.35, **shard):
    return UnifiedMargin(embedding_size, num_classes, m, 0.0, 0.0, s, s, **shard)


@register("softmax")
def softmax(embedding_size, num_classes, s=64.0, **shard):
    return UnifiedMargin(embedding_size, num_classes, 1.0, 0.0, 0.0, s, s, **shard)


class AdaFace(CosineHead):
    """AdaFace (Kim et al. 2022): the margin adapts to image quality via the feature norm.

    With z = clip((‖x‖ - μ) / (σ + ε) · h, -1, 1), μ, σ the EMA (momentum ``t_alpha``) of
    the (global) batch's norm statistics, the target logit is s·(cos(θ_y - m·z) - (m + m·z)).
    A batch of one sample has no standard deviation: the statistics are then left as they
    are (the reference would fold a NaN into them and poison every later step).
    """

    def __init__(self, embedding_size, num_classes, m=0.4, h=0.333, s=64.0, t_alpha=0.01, **kw):
        super().__init__(embedding_size, num_classes, **kw)
        self.m, self.h, self.s, self.t_alpha = m, h, s, t_alpha
        self.register_buffer("batch_mean", torch.tensor(20.0))
        self.register_buffer("batch_std", torch.tensor(100.0))

    def logits(self, cos, cos_y, is_pos, embeddings):
        # The embeddings are the global batch's: every rank updates identical statistics.
        norms = embeddings.norm(dim=1).clamp(0.001, 100).detach()
        if self.training and len(norms) > 1:
            with torch.no_grad():
                self.batch_mean.mul_(1 - self.t_alpha).add_(self.t_alpha * norms.mean())
                self.batch_std.mul_(1 - self.t_alpha).add_(self.t_alpha * norms.std())
        z = ((norms - self.batch_mean) / (self.batch_std + 1e-3) * self.h).clamp(-1, 1)
        theta_m = (_theta(cos_y) - self.m * z).clamp(_EPS, math.pi - _EPS)
        return self.s * (torch.cos(theta_m) - (self.m + self.m * z)), self.s * cos


register("adaface")(AdaFace)


class NPCFace(CosineHead):
    """NPCFace (Zeng et al. 2020): m0=0.4, m1=0.2, t=1.1 and the paper's a=0.25.

    A negative k is hard when cos θ_k > cos(θ_y + m0); hard negatives become t·cos θ_k + a,
    and the positive margin grows with them: m = m0 + m1 · mean(hard negative cosines),
    target cos(θ_y + m) (θ_y + m capped at π). Where this departs from FaceX-Zoo's head
    (which uses a = 0.2; ``--loss-arg a=0.2`` reproduces it): FaceX-Zoo computes the
    collaborative margin under no_grad, finds hard negatives against its ArcFace margin
    (0.5) rather than m0, and leaves the target as plain cos θ_y wherever cos θ_y <= 0.
    Here the gradient flows through the margin (the loss as written is differentiated,
    which also pushes the hard negatives away through m), the hard mask uses the paper's
    m0, and the margin applies at every angle (θ_y + m capped at π) so the target stays
    monotonic in θ_y. Sharded, the hard negatives' sum and count are all-reduced.
    """

    def __init__(self, embedding_size, num_classes, s=64.0, m0=0.4, m1=0.2, t=1.1, a=0.25, **kw):
        super().__init__(embedding_size, num_classes, **kw)
        self.s, self.m0, self.m1, self.t, self.a = s, m0, m1, t, a

    def logits(self, cos, cos_y, is_pos, embeddings):
        theta = _theta(cos_y)
        hard = (cos > torch.cos((theta + self.m0).clamp(max=math.pi))[:, None]) & ~is_pos
        n_hard = all_reduce_sum(hard.sum(1).to(cos.dtype), grad=False)
        mean_hard = all_reduce_sum(torch.where(hard, cos, 0).sum(1)) / n_hard.clamp(min=1)
        margin = self.m0 + self.m1 * mean_hard * (n_hard > 0)
        target = torch.cos((theta + margin).clamp(max=math.pi))
        return self.s * target, self.s * torch.where(hard, self.t * cos + self.a, cos)


register("npcface")(NPCFace)


class MVSoftmax(CosineHead):
    """MV-Arc-Softmax (Wang et al. 2020): ArcFace target cos(θ_y + m); a mis-classified
    negative (cos θ_k > cos(θ_y + m)) is emphasised as t·cos θ_k + t - 1."""

    def __init__(self, embedding_size, num_classes, s=32.0, m=0.35, t=1.2, **shard):
        super().__init__(embedding_size, num_classes, **shard)
        self.s, self.m, self.t = s, m, t

    def logits(self, cos, cos_y, is_pos, embeddings):
        target = torch.cos((_theta(cos_y) + self.m).clamp(max=math.pi))
        hard = cos > target[:, None]
        return self.s * target, self.s * torch.where(hard, self.t * cos + self.t - 1, cos)


register("mv-softmax")(MVSoftmax)


class SearchSoftmax(CosineHead):
    """Search-Softmax (Wang et al., loss function search): L = -log(h(a, p_y) · p_y) with
    p_y the softmax probability of s·cos logits and h(a, p) = 1 / (a·p + (1 - a)).

    ``a`` must be <= 0 so that h stays in (0, 1] (it then only makes the loss harder);
    with ``random=True`` (Random-Softmax) a is drawn from U[a_min, 0] at each
    ``set_epoch(e)`` from a generator keyed by (seed, e). ``a`` is a buffer, so a
    checkpoint records it; the reward-guided search over a is ``search_softmax.py``.
    """

    def __init__(
        self, embedding_size, num_classes, s=64.0, a=-1.0, random=False, a_min=-5.0, seed=0, **kw
    ):
        super().__init__(embedding_size, num_classes, **kw)
        if a > 0 or a_min > 0:
            raise FacecleanError(f"a = {a} (a_min = {a_min}) would put h(a, p) above 1; use a <= 0")
        self.s, self.random, self.a_min, self.seed = s, random, a_min, seed
        self.register_buffer("a_value", torch.tensor(float(a), dtype=torch.float64))

    @property
    def a(self) -> float:
        return float(self.a_value)

    @a.setter
    def a(self, value: float) -> None:
        if value > 0:
            raise FacecleanError(f"a = {value} would put h(a, p) above 1; use a <= 0")
        self.a_value.fill_(float(value))

    def set_epoch(self, epoch: int) -> None:
        if self.random:
            self.a = float(self.a_min * torch.rand((), generator=_seeded(self.seed, epoch)))

    def per_sample_loss(self, cos, cos_y, is_pos, embeddings):
        log_py = self.s * cos_y - log_normaliser(self.s * cos)
        a = self.a_value.to(log_py)  # a tensor op: no host sync per step on a GPU
        h = 1.0 / (a * log_py.exp() + (1 - a))
        return -(torch.log(h) + log_py)


register("search-softmax")(SearchSoftmax)


class LinearMargin(CosineHead):
    """MIS / LinearFace: target logit s·(b - a·θ_y), linear in the angle (a = b = 0.88)."""

    def __init__(self, embedding_size, num_classes, s=64.0, a=0.88, b=0.88, **shard):
        super().__init__(embedding_size, num_classes, **shard)
        if a <= 0:
            raise FacecleanError(f"a = {a} makes the target logit non-decreasing in θ; a > 0")
        self.s, self.a, self.b = s, a, b

    def logits(self, cos, cos_y, is_pos, embeddings):
        return self.s * (self.b - self.a * _theta(cos_y)), self.s * cos


register("linear")(LinearMargin)


def PartialFC(head: CosineHead, sample_rate: float = 0.1, seed: int = 0) -> CosineHead:  # noqa: N802
    """Partial FC around any head (kept for the old spelling): ``head.set_sampling``."""
    return head.set_sampling(sample_rate, seed)
