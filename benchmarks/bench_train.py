"""Training throughput and the cost of each margin head, measured in one run.

* images/second of a MobileFaceNet training step (forward + backward + SGD) at
  (W, D) = (1, 1) and the paper's (0.84, 1.47), batch 64, 112x112, synthetic tensors;
* time of forward + backward of each head relative to plain normalised softmax, at
  10K and 100K classes (batch 128, 512-d embeddings);
* the model-parallel head: step time (forward + backward + SGD) and peak memory per
  process at 100K and 1M classes on 1 and 2 gloo processes, against the replicated head
  (every process holds all classes; on 2 processes its gradients are all-reduced, as DDP
  on the head would do) measured in the same run.

  python benchmarks/bench_train.py [--steps 5] [--batch-size 64]
  python benchmarks/bench_train.py --sharded-only [--classes 100000 1000000] [--dim 512]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

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


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _head_worker(rank, world, port, mode, classes, dim, batch, steps, out) -> None:
    """One process: build the head (sharded or replicated), time SGD steps on its part of
    a global batch of ``batch`` embeddings, report the step time and peak RSS growth."""
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    if world > 1:
        dist.init_process_group("gloo", f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    before = _rss_mib()
    torch.manual_seed(0)
    shard = {"rank": rank, "world": world} if mode == "sharded" and world > 1 else {}
    head = create_head("arcface", dim, classes, **shard)
    module = head
    if mode == "replicated" and world > 1:
        module = torch.nn.parallel.DistributedDataParallel(head)
    opt = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(rank)
    local = batch // world
    emb = torch.randn(local, dim, generator=g, requires_grad=True)
    y = torch.randint(0, classes, (local,), generator=g)

    def one():
        loss = module(emb, y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    one()
    times = []
    for _ in range(steps):
        if world > 1:
            dist.barrier()
        t = time.perf_counter()
        one()
        times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB
    with open(f"{out}/{rank}.json", "w") as f:
        json.dump({"seconds": min(times), "peak_mib": peak - before}, f)
    if world > 1:
        dist.destroy_process_group()


def head_scaling(mode: str, world: int, classes: int, dim: int, batch: int, steps: int):
    """(step seconds, peak MiB per process) of the head, max over processes."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as out:
        args = (world, port, mode, classes, dim, batch, steps, out)
        mp.spawn(_head_worker, args, nprocs=world, join=True)
        rows = [json.load(open(f"{out}/{r}.json")) for r in range(world)]
    return max(r["seconds"] for r in rows), max(r["peak_mib"] for r in rows)


def sharded_section(classes_list, dim: int, batch: int, steps: int) -> None:
    print(
        f"model-parallel head vs replicated head (ArcFace, {dim}-d, global batch {batch}, "
        "forward+backward+SGD, best of "
        f"{steps} steps; memory: peak RSS growth per process):"
    )
    for classes in classes_list:
        base_t, base_m = head_scaling("replicated", 1, classes, dim, batch, steps)
        print(
            f"  {classes:>9,} classes  1 process (whole head): {base_t * 1e3:8.0f} ms "
            f"{base_m:8.0f} MiB"
        )
        for mode in ("replicated", "sharded"):
            t, m = head_scaling(mode, 2, classes, dim, batch, steps)
            print(
                f"  {classes:>9,} classes  2 processes, {mode:<10}: {t * 1e3:8.0f} ms "
                f"{m:8.0f} MiB per process  ({m / base_m:4.2f}x memory, "
                f"{t / base_t:4.2f}x time of 1 process)"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--sharded-only", action="store_true", help="Only the sharded-head part.")
    ap.add_argument("--classes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--head-batch", type=int, default=128)
    ap.add_argument("--head-steps", type=int, default=3)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    if args.sharded_only:
        sharded_section(args.classes, args.dim, args.head_batch, args.head_steps)
        return
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
    sharded_section(args.classes, args.dim, args.head_batch, args.head_steps)


if __name__ == "__main__":
    main()
