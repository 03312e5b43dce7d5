import json
import math

import pytest
import torch
import torch.nn.functional as F

from faceclean.errors import FacecleanError
from faceclean.training.backbones import (
    MobileFaceNet,
    count_macs,
    create_backbone,
    distribute_blocks,
    flops_matched_pairs,
)
from faceclean.training.losses import PartialFC, create_head, margin_function


@pytest.fixture(autouse=True)
def _float64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def batch(n=6, d=8, c=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randint(
        0, c, (n,), generator=g
    )


def textbook(x, w, y, target_fn, s):
    """Cross-entropy with the target logit replaced, written out by hand, sample by sample."""
    losses = []
    for i in range(len(y)):
        xi = x[i] / x[i].norm()
        cos = torch.stack([xi @ (wk / wk.norm()) for wk in w])
        logits = s * cos.clone()
        theta = torch.acos(cos[y[i]].clamp(-1 + 1e-7, 1 - 1e-7))
        logits[y[i]] = s * target_fn(theta, cos[y[i]])
        losses.append(-logits[y[i]] + torch.logsumexp(logits, 0))
    return torch.stack(losses).mean()


@pytest.mark.parametrize(
    ("name", "kwargs", "target_fn"),
    [
        ("arcface", {"s": 64, "m": 0.5}, lambda t, c: torch.cos(t + 0.5)),
        ("cosface", {"s": 64, "m": 0.35}, lambda t, c: c - 0.35),
        ("sphereface", {"s": 30, "m": 1.35}, lambda t, c: torch.cos(1.35 * t)),
        ("softmax", {"s": 30}, lambda t, c: c),
        ("linear", {"s": 64, "a": 0.88, "b": 0.88}, lambda t, c: 0.88 - 0.88 * t),
    ],
)
def test_presets_equal_the_textbook_formula(name, kwargs, target_fn):
    # Small angles keep m*theta + m2 inside [0, pi], where the textbook formulas hold.
    x, y = batch()
    head = create_head(name, 8, 5, **kwargs)
    with torch.no_grad():
        head.weight[y] = x + 0.05 * head.weight[y]
    got = head(x, y)
    want = textbook(x, head.weight, y, target_fn, kwargs["s"])
    assert torch.allclose(got, want, atol=1e-8)


def test_unified_with_separate_scales_matches_reference():
    x, y = batch(seed=1)
    head = create_head("unified", 8, 5, m1=1.15, m2=0.22, m3=0.1, s_p=40, s_n=48)
    cos = F.normalize(x) @ F.normalize(head.weight).T
    theta = torch.acos(cos[range(6), y])
    arg = 1.15 * theta + 0.22
    f = torch.where(arg > math.pi, -1 - (arg - math.pi), torch.cos(arg.clamp(max=math.pi))) - 0.1
    logits = 48 * cos
    logits[range(6), y] = 40 * f
    assert torch.allclose(head(x, y), F.cross_entropy(logits, y), atol=1e-8)


def test_margin_function_is_continuous_and_decreasing_everywhere():
    theta = torch.linspace(0, math.pi, 2001)
    for m1, m2, m3 in [(1.0, 0.5, 0.0), (1.5, 0.3, 0.2), (0.8, -0.3, 0.0), (2.5, 0.0, 0.0)]:
        f = margin_function(theta, m1, m2, m3)
        assert (f[1:] < f[:-1]).all(), (m1, m2, m3)


@pytest.mark.parametrize(
    "name",
    [
        "unified",
        "arcface",
        "cosface",
        "adaface",
        "npcface",
        "mv-softmax",
        "search-softmax",
        "linear",
    ],
)
def test_gradients_are_true_gradients(name):
    x, y = batch(n=4, d=6, c=4, seed=3)
    head = create_head(name, 6, 4)
    head.eval()  # AdaFace's statistics must not move between gradcheck's evaluations
    w = head.weight.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: head(x, y, weight=v), (w,), eps=1e-6, atol=1e-4)
    if name != "adaface":  # AdaFace stops the gradient through the norm, as its paper does
        x.requires_grad_(True)
        assert torch.autograd.gradcheck(lambda e: head(e, y), (x,), eps=1e-6, atol=1e-4)


def test_npcface_matches_a_direct_computation():
    x, y = batch(n=5, d=8, c=6, seed=4)
    head = create_head("npcface", 8, 6)
    cos = F.normalize(x) @ F.normalize(head.weight).T
    rows = []
    for i in range(5):
        t = torch.acos(cos[i, y[i]])
        hard = [k for k in range(6) if k != y[i] and cos[i, k] > torch.cos(t + 0.4)]
        m = 0.4 + (0.2 * torch.stack([cos[i, k] for k in hard]).mean() if hard else 0.0)
        logits = cos[i].clone()
        for k in hard:
            logits[k] = 1.1 * cos[i, k] + 0.25  # the paper's a (FaceX-Zoo: 0.2)
        logits[y[i]] = torch.cos(t + m)
        rows.append(64 * logits)
    assert torch.allclose(head(x, y), F.cross_entropy(torch.stack(rows), y), atol=1e-8)


def test_search_softmax_reference_and_range_check():
    x, y = batch(seed=5)
    head = create_head("search-softmax", 8, 5, a=-2.0)
    p = F.softmax(64 * F.normalize(x) @ F.normalize(head.weight).T, 1)[range(6), y]
    h = 1 / (-2.0 * p + 3.0)
    assert torch.allclose(head(x, y), -(torch.log(h * p)).mean(), atol=1e-8)
    with pytest.raises(FacecleanError, match="h\\(a, p\\) above 1"):
        create_head("search-softmax", 8, 5, a=0.5)


def test_bad_margins_are_errors():
    with pytest.raises(FacecleanError, match="non-monotonic"):
        create_head("unified", 8, 5, m1=0.0)
    with pytest.raises(FacecleanError, match="scales must be positive"):
        create_head("unified", 8, 5, s_p=-1)
    with pytest.raises(FacecleanError, match="unknown loss"):
        create_head("nope", 8, 5)


def test_partial_fc_full_rate_equals_plain_head_and_sampling_keeps_positives():
    x, y = batch(n=8, d=8, c=50, seed=6)
    torch.manual_seed(0)
    head = create_head("arcface", 8, 50)
    torch.manual_seed(0)
    same = PartialFC(create_head("arcface", 8, 50), 1.0)
    assert torch.equal(same.weight, head.weight)
    assert torch.allclose(same(x, y), head(x, y))
    sampled = PartialFC(create_head("arcface", 8, 50), 0.2)
    loss = sampled(x, y)
    assert torch.isfinite(loss) and loss.item() != head(x, y).item()


def test_sample_rate_is_a_share_of_all_classes_positives_included():
    head = create_head("arcface", 8, 100).set_sampling(0.2, seed=3)
    labels = torch.tensor([1, 5, 5, 9, 40, 77, 78, 99])
    index = head.sampled_classes(labels)
    assert len(index) == 20  # 20% of 100 classes: the 7 positives and 13 negatives
    assert set(labels.tolist()) <= set(index.tolist())
    assert torch.equal(index, head.sampled_classes(labels))  # keyed by the draw count
    many = torch.arange(0, 100, 3)  # 34 positives > 20: all of them, no negatives
    assert head.sampled_classes(many).tolist() == many.tolist()
    with pytest.raises(FacecleanError, match="outside"):
        head.set_sampling(1.5)


def test_adaface_batch_of_one_leaves_the_statistics_finite():
    x, y = batch(n=6, d=8, c=5, seed=7)
    head = create_head("adaface", 8, 5)
    head(x[:1], y[:1]).backward()
    assert torch.isfinite(head.batch_std) and head.batch_std.item() == 100.0
    loss = head(x, y)
    assert torch.isfinite(loss) and torch.isfinite(head.batch_std)
    assert head.batch_std.item() != 100.0  # a real batch still updates them


def test_backbone_flops_of_known_configurations():
    torch.set_default_dtype(torch.float32)
    assert count_macs(MobileFaceNet(1.0, 1.0, 512)) == 221_161_984  # the literature's 221M
    assert round(count_macs(create_backbone("iresnet50")) / 1e9, 2) == 6.31  # ArcFace R50
    pairs = flops_matched_pairs(221_161_984, [0.84, 1.0], [1.0, 1.3, 1.47], tolerance=0.1)
    assert [(w, d) for w, d, _ in pairs] == [(1.0, 1.0), (0.84, 1.47), (0.84, 1.3)]
    small = MobileFaceNet(0.84, 1.47, 128, input_size=56)
    assert small(torch.zeros(2, 3, 56, 56)).shape == (2, 128)
    with pytest.raises(FacecleanError, match="width 3.0 is outside"):
        MobileFaceNet(3.0)
    with pytest.raises(FacecleanError, match="depth 0.1 is outside"):
        MobileFaceNet(1.0, 0.1)


def test_every_depth_of_the_default_grid_is_a_distinct_network():
    from faceclean.search.space import DEFAULT_CHOICES

    torch.set_default_dtype(torch.float32)
    blocks = [MobileFaceNet(1.0, d, 128, input_size=56).blocks for d in DEFAULT_CHOICES["depth"]]
    assert len(set(blocks)) == len(blocks) == 10
    assert [sum(b) for b in blocks] == list(range(15, 25))  # one block more per grid step
    assert distribute_blocks((5, 1, 6, 1, 2), 1.0) == (5, 1, 6, 1, 2)
    assert distribute_blocks((3, 4, 14, 3), 0.5) == (2, 2, 7, 1)  # tie: earlier stage
    # D = 1.01 adds one block (+6% MACs), not one per stage (+29%).
    base = count_macs(MobileFaceNet(1.0, 1.0, 512))
    assert 1.05 < count_macs(MobileFaceNet(1.0, 1.01, 512)) / base < 1.07


def test_reward_guided_search_moves_mu_toward_the_best_a(tmp_path):
    from faceclean.training.search_softmax import reward_guided_search

    best_a = -3.0
    seen = []

    def train_copy(epoch, i, a, start):
        # A task whose reward peaks at a = -3; each copy "starts" from the previous best.
        seen.append((epoch, start is not None))
        ckpt = tmp_path / f"e{epoch}c{i}.pt"
        torch.save({"a": a}, ckpt)
        return ckpt, -((a - best_a) ** 2)

    out = reward_guided_search(tmp_path / "run", 8, 4, train_copy, mu=-0.5, sigma=0.5, seed=1)
    log = [
        json.loads(x) for x in (tmp_path / "run" / "search_softmax.jsonl").read_text().splitlines()
    ]
    mus = [row["mu"] for row in log[::4]]
    assert len(log) == 32 and {"epoch", "a", "reward", "mu"} <= set(log[0])
    assert abs(mus[-1] - best_a) < abs(-0.5 - best_a) / 3  # mu went most of the way
    assert (
        sum(b < a for a, b in zip([-0.5, *mus[:-1]], mus, strict=True)) >= 6
    )  # it moved down almost always
    assert seen[0] == (0, False) and all(s for e, s in seen if e > 0)
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert saved["a"] == max((r for r in log if r["epoch"] == 8), key=lambda r: r["reward"])["a"]
    assert out["mu"] == mus[-1]
    # Resuming a finished search changes nothing.
    again = reward_guided_search(tmp_path / "run", 8, 4, train_copy, mu=-0.5, sigma=0.5, seed=1)
    assert again["mu"] == out["mu"] and len(seen) == 32
