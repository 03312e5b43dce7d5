"""Margin-based classification heads, picked by name. Each is a plain ``nn.Module`` that
owns the class-weight matrix and maps (raw embeddings [N, d], labels [N]) to a scalar loss.

Logits are cosines between the L2-normalised embedding and class weights. The unified
scale-aware margin loss (DESIGN.md) is

    L = -log( e^{s_p f(θ_y)} / (e^{s_p f(θ_y)} + Σ_{k≠y} e^{s_n cos θ_k}) ),
    f(θ) = cos(m1 θ + m2) - m3,

with true gradients through θ = arccos(cos θ_y). Outside m1 θ + m2 ∈ [0, π] the cosine
would turn back up, so f is continued linearly with slope -m1 there: f stays continuous
and strictly decreasing in θ for every m1 > 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from faceclean.errors import FacecleanError

HEADS: dict[str, Callable[..., nn.Module]] = {}
_EPS = 1e-7


def register(name: str):
    def wrap(fn):
        HEADS[name] = fn
        return fn

    return wrap


def create_head(name: str, embedding_size: int, num_classes: int, **kwargs) -> nn.Module:
    """Instantiate a registered head by name; unknown keyword arguments are an error."""
    if name not in HEADS:
        raise FacecleanError(f"unknown loss {name!r}; choose from {', '.join(HEADS)}")
    return HEADS[name](embedding_size=embedding_size, num_classes=num_classes, **kwargs)


class CosineHead(nn.Module):
    """Holds the class weights; ``cosines`` gives cos θ [N, C] for raw embeddings."""

    def __init__(self, embedding_size: int, num_classes: int):
        super().__init__()
        if num_classes < 2:
            raise FacecleanError(f"training needs at least 2 classes, got {num_classes}")
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size).normal_(0, 0.01))
        self.num_classes = num_classes

    def cosines(self, embeddings: torch.Tensor, weight: torch.Tensor | None = None):
        w = self.weight if weight is None else weight
        return F.linear(F.normalize(embeddings), F.normalize(w)).clamp(-1, 1)

    def target_logits(self, cos: torch.Tensor, labels: torch.Tensor, embeddings: torch.Tensor):
        """(logits [N, C]) with the margin applied; subclasses override."""
        raise NotImplementedError

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        cos = self.cosines(embeddings, weight)
        return F.cross_entropy(self.target_logits(cos, labels, embeddings), labels)


def margin_function(theta: torch.Tensor, m1: float, m2: float, m3: float) -> torch.Tensor:
    """f(θ) = cos(m1 θ + m2) - m3, continued linearly (slope -m1) where m1 θ + m2 leaves
    [0, π], so f is continuous and strictly decreasing for m1 > 0."""
    arg = m1 * theta + m2
    inside = torch.cos(arg.clamp(0, math.pi))
    below = 1 - arg  # arg < 0: continue from cos(0) = 1 downward
    above = -1 - (arg - math.pi)  # arg > π: continue from cos(π) = -1 downward
    f = torch.where(arg < 0, below, torch.where(arg > math.pi, above, inside))
    return f - m3


class UnifiedMargin(CosineHead):
    """The scale-aware unified margin loss (m1, m2, m3, s_p, s_n).

    Presets: ArcFace (m1=1, m3=0, s_p=s_n), CosFace (m1=1, m2=0), SphereFace-style (m1>1),
    normalised softmax (m1=1, m2=m3=0). The paper's best on MS1MV2: m1 1.15, m2 0.22, m3 0,
    s_p 40, s_n 48.
    """

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        m1: float = 1.0,
        m2: float = 0.5,
        m3: float = 0.0,
        s_p: float = 64.0,
        s_n: float = 64.0,
    ):
        super().__init__(embedding_size, num_classes)
        if m1 <= 0:
            raise FacecleanError(f"m1 = {m1} makes the margin function non-monotonic; m1 > 0")
        if s_p <= 0 or s_n <= 0:
            raise FacecleanError(f"scales must be positive (s_p = {s_p}, s_n = {s_n})")
        if not -1 < m2 < math.pi or not -1 < m3 < 2:
            raise FacecleanError(f"m2 = {m2} / m3 = {m3} are outside any sensible range")
        self.m1, self.m2, self.m3, self.s_p, self.s_n = m1, m2, m3, s_p, s_n

    def target_logits(self, cos, labels, embeddings):
        cos_y = cos.gather(1, labels[:, None])
        theta = torch.acos(cos_y.clamp(-1 + _EPS, 1 - _EPS))
        target = self.s_p * margin_function(theta, self.m1, self.m2, self.m3)
        return (self.s_n * cos).scatter(1, labels[:, None], target)


@register("unified")
def unified(embedding_size, num_classes, m1=1.15, m2=0.22, m3=0.0, s_p=40.0, s_n=48.0):
    return UnifiedMargin(embedding_size, num_classes, m1, m2, m3, s_p, s_n)


@register("arcface")
def arcface(embedding_size, num_classes, s=64.0, m=0.5):
    return UnifiedMargin(embedding_size, num_classes, 1.0, m, 0.0, s, s)


@register("cosface")
def cosface(embedding_size, num_classes, s=64.0, m=0.35):
    return UnifiedMargin(embedding_size, num_classes, 1.0, 0.0, m, s, s)


@register("sphereface")
def sphereface(embedding_size, num_classes, s=64.0, m=1.35):
    return UnifiedMargin(embedding_size, num_classes, m, 0.0, 0.0, s, s)


@register("softmax")
def softmax(embedding_size, num_classes, s=64.0):
    return UnifiedMargin(embedding_size, num_classes, 1.0, 0.0, 0.0, s, s)


class AdaFace(CosineHead):
    """AdaFace (Kim et al. 2022): the margin adapts to image quality via the feature norm.

    With z = clip((‖x‖ - μ) / (σ + ε) · h, -1, 1), μ, σ the EMA (momentum ``t_alpha``) of
    the batch's norm statistics, the target logit is s·(cos(θ_y - m·z) - (m + m·z)).
    """

    def __init__(self, embedding_size, num_classes, m=0.4, h=0.333, s=64.0, t_alpha=0.01):
        super().__init__(embedding_size, num_classes)
        self.m, self.h, self.s, self.t_alpha = m, h, s, t_alpha
        self.register_buffer("batch_mean", torch.tensor(20.0))
        self.register_buffer("batch_std", torch.tensor(100.0))

    def target_logits(self, cos, labels, embeddings):
        norms = embeddings.norm(dim=1, keepdim=True).clamp(0.001, 100).detach()
        if self.training:
            with torch.no_grad():
                self.batch_mean.mul_(1 - self.t_alpha).add_(self.t_alpha * norms.mean())
                self.batch_std.mul_(1 - self.t_alpha).add_(self.t_alpha * norms.std())
        z = ((norms - self.batch_mean) / (self.batch_std + 1e-3) * self.h).clamp(-1, 1)
        cos_y = cos.gather(1, labels[:, None])
        theta = torch.acos(cos_y.clamp(-1 + _EPS, 1 - _EPS))
        theta_m = (theta - self.m * z).clamp(_EPS, math.pi - _EPS)
        target = torch.cos(theta_m) - (self.m + self.m * z)
        return self.s * cos.scatter(1, labels[:, None], target)


register("adaface")(AdaFace)


class NPCFace(CosineHead):
    """NPCFace (Zeng et al. 2020), FaceX-Zoo's defaults m0=0.4, m1=0.2, t=1.1, a=0.2.

    A negative k is hard when cos θ_k > cos(θ_y + m0); hard negatives become t·cos θ_k + a,
    and the positive margin grows with them: m = m0 + m1 · mean(hard negative cosines).
    """

    def __init__(self, embedding_size, num_classes, s=64.0, m0=0.4, m1=0.2, t=1.1, a=0.2):
        super().__init__(embedding_size, num_classes)
        self.s, self.m0, self.m1, self.t, self.a = s, m0, m1, t, a

    def target_logits(self, cos, labels, embeddings):
        cos_y = cos.gather(1, labels[:, None])
        theta = torch.acos(cos_y.clamp(-1 + _EPS, 1 - _EPS))
        not_target = torch.ones_like(cos, dtype=torch.bool).scatter(1, labels[:, None], False)
        hard = (cos > torch.cos((theta + self.m0).clamp(max=math.pi))) & not_target
        n_hard = hard.sum(1, keepdim=True)
        mean_hard = torch.where(hard, cos, 0).sum(1, keepdim=True) / n_hard.clamp(min=1)
        margin = self.m0 + self.m1 * mean_hard * (n_hard > 0)
        target = torch.cos((theta + margin).clamp(max=math.pi))
        logits = torch.where(hard, self.t * cos + self.a, cos)
        return self.s * logits.scatter(1, labels[:, None], target)


register("npcface")(NPCFace)


class MVSoftmax(CosineHead):
    """MV-Arc-Softmax (Wang et al. 2020): ArcFace target cos(θ_y + m); a mis-classified
    negative (cos θ_k > cos(θ_y + m)) is emphasised as t·cos θ_k + t - 1."""

    def __init__(self, embedding_size, num_classes, s=32.0, m=0.35, t=1.2):
        super().__init__(embedding_size, num_classes)
        self.s, self.m, self.t = s, m, t

    def target_logits(self, cos, labels, embeddings):
        cos_y = cos.gather(1, labels[:, None])
        theta = torch.acos(cos_y.clamp(-1 + _EPS, 1 - _EPS))
        target = torch.cos((theta + self.m).clamp(max=math.pi))
        hard = cos > target
        logits = torch.where(hard, self.t * cos + self.t - 1, cos)
        return self.s * logits.scatter(1, labels[:, None], target)


register("mv-softmax")(MVSoftmax)


class SearchSoftmax(CosineHead):
    """Search-Softmax (Wang et al., loss function search): L = -log(h(a, p_y) · p_y) with
    p_y the softmax probability of s·cos logits and h(a, p) = 1 / (a·p + (1 - a)).

    ``a`` must be <= 0 so that h stays in (0, 1] (it then only makes the loss harder);
    with ``random=True`` (Random-Softmax) a is drawn from U[a_min, 0] at each
    ``set_epoch`` from a generator seeded with ``seed``.
    """

    def __init__(
        self, embedding_size, num_classes, s=64.0, a=-1.0, random=False, a_min=-5.0, seed=0
    ):
        super().__init__(embedding_size, num_classes)
        if a > 0 or a_min > 0:
            raise FacecleanError(f"a = {a} (a_min = {a_min}) would put h(a, p) above 1; use a <= 0")
        self.s, self.a, self.random, self.a_min = s, a, random, a_min
        self._gen = torch.Generator().manual_seed(seed)

    def set_epoch(self, epoch: int) -> None:
        if self.random:
            self.a = float(self.a_min * torch.rand((), generator=self._gen))

    def forward(self, embeddings, labels, weight=None):
        log_p = F.log_softmax(self.s * self.cosines(embeddings, weight), 1)
        log_py = log_p.gather(1, labels[:, None]).squeeze(1)
        h = 1.0 / (self.a * log_py.exp() + (1 - self.a))
        return -(torch.log(h) + log_py).mean()


register("search-softmax")(SearchSoftmax)


class LinearMargin(CosineHead):
    """MIS / LinearFace: target logit s·(b - a·θ_y), linear in the angle (a = b = 0.88)."""

    def __init__(self, embedding_size, num_classes, s=64.0, a=0.88, b=0.88):
        super().__init__(embedding_size, num_classes)
        if a <= 0:
            raise FacecleanError(f"a = {a} makes the target logit non-decreasing in θ; a > 0")
        self.s, self.a, self.b = s, a, b

    def target_logits(self, cos, labels, embeddings):
        theta = torch.acos(cos.gather(1, labels[:, None]).clamp(-1 + _EPS, 1 - _EPS))
        return self.s * cos.scatter(1, labels[:, None], self.b - self.a * theta)


register("linear")(LinearMargin)


class PartialFC(nn.Module):
    """Partial-FC style sampled classifier around any cosine head: each step uses the
    weights of every class in the batch plus a random ``sample_rate`` share of the others,
    so 360K-2M identities fit; ``sample_rate=1`` is exactly the wrapped head."""

    def __init__(self, head: CosineHead, sample_rate: float = 0.1, seed: int = 0):
        super().__init__()
        if not 0 < sample_rate <= 1:
            raise FacecleanError(f"sample rate {sample_rate} is outside (0, 1]")
        self.head, self.sample_rate = head, sample_rate
        self._gen = torch.Generator().manual_seed(seed)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        c = self.head.num_classes
        if self.sample_rate >= 1:
            return self.head(embeddings, labels)
        positive = torch.unique(labels)
        n = max(len(positive), int(self.sample_rate * c))
        score = torch.rand(c, generator=self._gen)
        score[positive] = 2.0  # positives always kept
        index = torch.topk(score, n).indices.sort().values
        remap = torch.full((c,), -1, dtype=torch.long)
        remap[index] = torch.arange(n)
        return self.head(
            embeddings,
            remap[labels.cpu()].to(labels.device),
            weight=self.head.weight[index.to(labels.device)],
        )
