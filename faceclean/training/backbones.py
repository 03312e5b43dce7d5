"""Face backbones picked by name: MobileFaceNet with width/depth multipliers, and IResNet.

Each is a plain ``nn.Module`` mapping [N, 3, H, W] images (H = W = 112, or smaller such as
56 for fast experiments) to raw (not normalised) embeddings [N, embedding_size]; the
feature norm is left in so that quality-aware heads (AdaFace) can read it.

The searched MobileFaceNet scales channels by ``width`` (rounded to a multiple of 8) and
the number of blocks by ``depth``: the total block count is ``ceil(D x base total)`` and is
distributed over the stages in proportion to their base counts (largest remainder), so D
resolves in steps of 1 / (base total) = 1/15 and every value of the default search grid
(steps of 0.06) is a distinct network; W = D = 1 is the base model of Chen et al. 2018 as
used in face recognition practice. (Rounding every stage up instead made D = 1.01 add 29%
of the MACs and gave the ten-value default grid only six distinct networks.)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from faceclean.errors import FacecleanError

BACKBONES: dict[str, Callable[..., nn.Module]] = {}
WIDTH_RANGE = (0.25, 2.0)
DEPTH_RANGE = (0.5, 3.0)


def register(name: str):
    def wrap(fn):
        BACKBONES[name] = fn
        return fn

    return wrap


def create_backbone(name: str, **kwargs) -> nn.Module:
    """Instantiate a registered backbone by name (see ``BACKBONES``)."""
    if name not in BACKBONES:
        raise FacecleanError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")
    return BACKBONES[name](**kwargs)


def distribute_blocks(base: tuple[int, ...], depth: float) -> tuple[int, ...]:
    """Blocks per stage for depth multiplier ``depth``: ceil(depth x sum(base)) blocks in
    all (at least one a stage), shared in proportion to ``base`` by largest remainder
    (ties to the earlier stage). ``depth = 1`` gives ``base`` back."""
    total = max(len(base), math.ceil(depth * sum(base) - 1e-9))
    ideal = [n * total / sum(base) for n in base]
    blocks = [max(1, math.floor(x)) for x in ideal]
    order = sorted(range(len(base)), key=lambda i: (-(ideal[i] - math.floor(ideal[i])), i))
    k = 0
    while sum(blocks) < total:
        blocks[order[k % len(base)]] += 1
        k += 1
    while sum(blocks) > total:  # the minimum of one a stage overshot: take from the largest
        blocks[max(range(len(base)), key=lambda i: (blocks[i], -i))] -= 1
    return tuple(blocks)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a hardware-friendly multiple, never below 90% of the request."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ConvBN(nn.Sequential):
    def __init__(self, cin, cout, k=1, s=1, groups=1, act=True):
        layers = [
            nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if act:
            layers.append(nn.PReLU(cout))
        super().__init__(*layers)


class Bottleneck(nn.Module):
    """Inverted residual: expand 1x1, depthwise 3x3, linear project 1x1."""

    def __init__(self, cin, cout, stride, expansion):
        super().__init__()
        hidden = cin * expansion
        self.residual = stride == 1 and cin == cout
        self.body = nn.Sequential(
            ConvBN(cin, hidden),
            ConvBN(hidden, hidden, 3, stride, groups=hidden),
            ConvBN(hidden, cout, act=False),
        )

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


# (expansion, channels, blocks, stride) of MobileFaceNet's bottleneck stages.
MOBILEFACENET_STAGES = (
    (2, 64, 5, 2),
    (4, 128, 1, 2),
    (2, 128, 6, 1),
    (4, 128, 1, 2),
    (2, 128, 2, 1),
)


class MobileFaceNet(nn.Module):
    """MobileFaceNet with a width multiplier (channels) and a depth multiplier (blocks).

    Args:
        width: channel multiplier W (0.25-2.0); the paper searches ~0.8-1.0.
        depth: block-count multiplier D (0.5-3.0); the paper searches ~1.0-1.5.
        embedding_size: output dimension (128-512).
        input_size: square input side in pixels (112, or 56 for fast experiments).
    """

    def __init__(
        self,
        width: float = 1.0,
        depth: float = 1.0,
        embedding_size: int = 512,
        input_size: int = 112,
    ):
        super().__init__()
        if not WIDTH_RANGE[0] <= width <= WIDTH_RANGE[1]:
            raise FacecleanError(f"width {width} is outside {WIDTH_RANGE}")
        if not DEPTH_RANGE[0] <= depth <= DEPTH_RANGE[1]:
            raise FacecleanError(f"depth {depth} is outside {DEPTH_RANGE}")
        if input_size < 32:
            raise FacecleanError(f"input size {input_size} is below 32 pixels")
        self.width, self.depth, self.input_size = width, depth, input_size
        c = make_divisible(64 * width)
        layers: list[nn.Module] = [ConvBN(3, c, 3, 2), ConvBN(c, c, 3, 1, groups=c)]
        counts = distribute_blocks(tuple(s[2] for s in MOBILEFACENET_STAGES), depth)
        self.blocks = counts
        for (expansion, channels, _, stride), n in zip(MOBILEFACENET_STAGES, counts, strict=True):
            cout = make_divisible(channels * width)
            for i in range(n):
                layers.append(Bottleneck(c, cout, stride if i == 0 else 1, expansion))
                c = cout
        last = make_divisible(512 * width)
        layers.append(ConvBN(c, last))
        self.features = nn.Sequential(*layers)
        side = math.ceil(input_size / 16)  # four stride-2 3x3 convs with padding 1
        # Global depthwise convolution: a learned spatial weighting instead of average pooling.
        self.gdc = ConvBN(last, last, side, 1, groups=last, act=False)
        self.gdc[0].padding = (0, 0)
        self.project = nn.Sequential(
            nn.Conv2d(last, embedding_size, 1, bias=False), nn.BatchNorm2d(embedding_size)
        )
        self.embedding_size = embedding_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.project(self.gdc(self.features(x))), 1)


class IBasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin),
            nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.PReLU(cout),
            nn.Conv2d(cout, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        return self.body(x) + (x if self.shortcut is None else self.shortcut(x))


class IResNet(nn.Module):
    """The ArcFace ResNet ("IResNet", InsightFace arcface_torch), e.g. layers (3, 4, 14, 3)
    for ResNet-50 and (3, 13, 30, 3) for ResNet-100."""

    def __init__(
        self,
        layers=(3, 4, 14, 3),
        width: float = 1.0,
        embedding_size: int = 512,
        input_size: int = 112,
        dropout: float = 0.0,
    ):
        super().__init__()
        if input_size < 32:
            raise FacecleanError(f"input size {input_size} is below 32 pixels")
        chans = [make_divisible(c * width) for c in (64, 128, 256, 512)]
        self.stem = nn.Sequential(
            nn.Conv2d(3, chans[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(chans[0]),
            nn.PReLU(chans[0]),
        )
        blocks, c = [], chans[0]
        for n, cout in zip(layers, chans, strict=True):
            for i in range(n):
                blocks.append(IBasicBlock(c, cout, 2 if i == 0 else 1))
                c = cout
        self.blocks = nn.Sequential(*blocks)
        side = math.ceil(input_size / 16)  # four stride-2 3x3 convs with padding 1
        self.head = nn.Sequential(
            nn.BatchNorm2d(c),
            nn.Dropout(dropout),
            nn.Flatten(),
            nn.Linear(c * side * side, embedding_size),
            nn.BatchNorm1d(embedding_size),
        )
        self.embedding_size = embedding_size
        self.input_size = input_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


@register("mobilefacenet")
def mobilefacenet(width=1.0, depth=1.0, embedding_size=512, input_size=112, **_) -> nn.Module:
    return MobileFaceNet(width, depth, embedding_size, input_size)


for _name, _layers in {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
}.items():

    def _make(width=1.0, depth=1.0, embedding_size=512, input_size=112, _layers=_layers, **_):
        layers = distribute_blocks(_layers, depth)
        return IResNet(layers, width, embedding_size, input_size)

    register(_name)(_make)


def count_macs(model: nn.Module, input_size: int | None = None) -> int:
    """Multiply-accumulates of one forward pass on one image (the convention face papers
    quote as "FLOPs"), counted exactly by ``torch.utils.flop_counter`` (which counts 2 per
    MAC for convolutions and matmuls; BatchNorm/PReLU are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    size = input_size or getattr(model, "input_size", 112)
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, size, size, device=next(model.parameters()).device))
    model.train(was_training)
    return counter.get_total_flops() // 2


def flops_matched_pairs(
    target_macs: int, widths, depths, tolerance: float = 0.05, **kwargs
) -> list[tuple[float, float, int]]:
    """(W, D, MACs) of MobileFaceNets within ``tolerance`` (relative) of ``target_macs``,
    closest first; e.g. the pairs that match the base model's budget."""
    out = []
    for w in widths:
        for d in depths:
            macs = count_macs(MobileFaceNet(w, d, **kwargs))
            if abs(macs - target_macs) <= tolerance * target_macs:
                out.append((w, d, macs))
    return sorted(out, key=lambda t: abs(t[2] - target_macs))


def grid_macs(
    widths, depths, embedding_size: int = 512, input_size: int = 112
) -> dict[tuple[float, float], tuple[tuple[int, ...], int]]:
    """{(W, D): (blocks per stage, MACs)} of MobileFaceNet over a (W, D) grid. The networks
    are built on the meta device: the count needs the shapes only, no weights or compute."""
    out = {}
    for w in widths:
        for d in depths:
            with torch.device("meta"):
                net = MobileFaceNet(w, d, embedding_size, input_size)
            out[(w, d)] = (net.blocks, count_macs(net))
    return out
