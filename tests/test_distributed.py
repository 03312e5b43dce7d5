"""The model-parallel head on 2 and 3 CPU processes (gloo) equals one process holding the
whole head over the same global batch: the loss, every embedding gradient and every
class-weight gradient (shards reassembled), for every head of the family."""

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from faceclean.training.distributed import shard_range
from faceclean.training.losses import create_head

D, C = 6, 11
CASES = [
    ("unified", {"m1": 1.15, "m2": 0.22, "m3": 0.05, "s_p": 20, "s_n": 24}, 1.0),
    ("arcface", {"s": 16, "m": 0.5}, 1.0),
    ("cosface", {"s": 16}, 1.0),
    ("sphereface", {"s": 16}, 1.0),
    ("softmax", {"s": 16}, 1.0),
    ("adaface", {"s": 16}, 1.0),
    ("npcface", {"s": 16, "m0": 0.9}, 1.0),  # a wide m0 makes hard negatives common
    ("mv-softmax", {"s": 16, "m": 0.9}, 1.0),
    ("search-softmax", {"s": 8, "a": -2.0}, 1.0),
    ("linear", {"s": 16}, 1.0),
    ("npcface", {"s": 16, "m0": 0.9}, 0.5),  # Partial FC: sampled per shard
    ("arcface", {"s": 16}, 0.5),
    ("search-softmax", {"s": 8, "a": -2.0}, 0.5),
]


def global_batch(n=10):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, D, generator=g, dtype=torch.float64) * (1 + torch.rand(n, 1, generator=g))
    return x, torch.randint(0, C, (n,), generator=g)


def local_rows(n, rank, world):
    return shard_range(n, rank, world)  # uneven slices: 10 rows over 3 ranks is 4, 3, 3


def make_head(name, kwargs, rate, **shard):
    torch.manual_seed(0)
    head = create_head(name, D, C, **kwargs, **shard)
    if rate < 1:
        head.set_sampling(rate, seed=5)
    return head


def worker(rank, world, port, out):
    torch.set_default_dtype(torch.float64)
    dist.init_process_group("gloo", f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    x, y = global_batch()
    a, b = local_rows(len(y), rank, world)
    results = []
    for name, kwargs, rate in CASES:
        head = make_head(name, kwargs, rate, rank=rank, world=world)
        xl = x[a:b].clone().requires_grad_(True)
        used = None
        if rate < 1:  # the classes this shard samples at this step, in global numbering
            local = y - head.class_start
            held = local[(local >= 0) & (local < len(head.weight))]
            used = head.sampled_classes(held) + head.class_start
        loss = head(xl, y[a:b])
        loss.backward()
        results.append(
            {
                "loss": loss.detach(),
                "x_grad": xl.grad,
                "w_grad": head.weight.grad,
                "used": used,
                "buffers": {k: v.clone() for k, v in head.named_buffers()},
            }
        )
    torch.save(results, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("world", [2, 3])
def test_sharded_heads_equal_one_process_with_the_whole_head(world, tmp_path):
    mp.spawn(worker, (world, free_port(), str(tmp_path)), nprocs=world, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world)]
    torch.set_default_dtype(torch.float64)
    try:
        x, y = global_batch()
        for i, (name, kwargs, rate) in enumerate(CASES):
            full = make_head(name, kwargs, 1.0)
            weight = full.weight
            labels = y
            if rate < 1:  # the reference uses exactly the union of the shards' samples
                used = torch.cat([r[i]["used"] for r in ranks])
                assert set(y.tolist()) <= set(used.tolist()), name  # positives kept
                remap = torch.full((C,), -1, dtype=torch.long)
                remap[used] = torch.arange(len(used))
                labels = remap[y]
                w = weight.detach()[used].clone().requires_grad_(True)
            else:
                w = weight
            xr = x.clone().requires_grad_(True)
            loss = full(xr, labels, weight=w) if rate < 1 else full(xr, labels)
            loss.backward()
            w_grad = torch.zeros_like(weight)
            if rate < 1:
                w_grad[used] = w.grad
            else:
                w_grad = weight.grad
            got_x = torch.cat([r[i]["x_grad"] for r in ranks])
            got_w = torch.cat([r[i]["w_grad"] for r in ranks])
            for r in ranks:
                assert torch.allclose(r[i]["loss"], loss.detach(), atol=1e-5, rtol=0), name
                for key, value in full.named_buffers():
                    if key != "draws":  # AdaFace statistics: from the global batch on every rank
                        assert torch.allclose(r[i]["buffers"][key], value, atol=1e-9), name
            assert torch.allclose(got_x, xr.grad, atol=1e-5, rtol=0), (name, rate)
            assert torch.allclose(got_w, w_grad, atol=1e-5, rtol=0), (name, rate)
            assert xr.grad.abs().max() > 1e-4  # a gradient that could have been wrong
    finally:
        torch.set_default_dtype(torch.float32)
