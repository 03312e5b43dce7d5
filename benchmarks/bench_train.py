"""Training throughput and the cost of each margin head, measured in one run.

* images/second of a MobileFaceNet training step (forward + backward + SGD) at
  (W, D) = (1, 1) and the paper's (0.84, 1.47), batch 64, 112x112, synthetic tensors;
* time of forward + backward of each head relative to plain normalised softmax, at
  10K and 100K classes (batch 128, 512-d embeddings).

  python benchmarks/bench_train.py [--steps 5] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import time

import torch

from faceclean.training.backbones import MobileFaceNet, count_macs
from faceclean.training.losses import HEADS, create_head


def step_rate(width: float, depth: float, batch: int, steps: int) -> float:
    torch.manual_seed(0)
    model = MobileFaceNet(width, depth, 512)
    head = create_head("unified", 512, 1000)
    opt = torch.optim.SGD(list(model.parameters()) + list(head.parameters()), lr=0.1, momentum=0.9)
    x = torch.randn(batch, 3, 112, 112)
    y = torch.randint(0, 1000, (batch,))

    def one():
        loss = head(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    one()
    t = time.perf_counter()
    for _ in range(steps):
        one()
    return steps * batch / (time.perf_counter() - t)


def head_time(name: str, classes: int, batch: int = 128, repeats: int = 5) -> float:
    torch.manual_seed(0)
    head = create_head(name, 512, classes)
    emb = torch.randn(batch, 512, requires_grad=True)
    y = torch.randint(0, classes, (batch,))
    head(emb, y).backward()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        head(emb, y).backward()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    for w, d in ((1.0, 1.0), (0.84, 1.47)):
        rate = step_rate(w, d, args.batch_size, args.steps)
        macs = count_macs(MobileFaceNet(w, d, 512))
        print(f"MobileFaceNet W={w} D={d} ({macs / 1e6:.0f}M MACs): {rate:.1f} train images/s")
    for classes in (10_000, 100_000):
        base = head_time("softmax", classes)
        print(
            f"heads at {classes:,} classes (forward+backward, batch 128; softmax "
            f"{base * 1e3:.1f} ms):"
        )
        for name in HEADS:
            t = head_time(name, classes)
            print(f"  {name:<15} {t * 1e3:8.1f} ms  {t / base:5.2f}x softmax")


if __name__ == "__main__":
    main()
