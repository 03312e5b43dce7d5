"""CPU against GPU on one training step (MobileFaceNet + ArcFace head + SGD) from the same
seed (`faceclean doctor` runs it where torch sees a CUDA GPU)."""

from __future__ import annotations

from pathlib import Path

from faceclean.data.device_check import agreement

TOL_TRAIN = 1e-3  # relative, after one SGD step (cuDNN convolutions, TF32 off)


def check_train(tmp: Path, gpu: str = "cuda") -> str:
    """One SGD step on the CPU and on ``gpu`` from one seed; "same: ..." when the loss and
    every weight agree within :data:`TOL_TRAIN` (relative). ``tmp`` is unused (uniform
    signature with the other checks)."""
    import torch

    from faceclean.training.backbones import create_backbone
    from faceclean.training.losses import create_head

    def step(device: str):
        torch.manual_seed(0)
        backbone = create_backbone("mobilefacenet", width=0.25, embedding_size=32, input_size=56)
        head = create_head("arcface", 32, 10)
        params = list(backbone.parameters()) + list(head.parameters())
        backbone.to(device).train()
        head.to(device)
        opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
        g = torch.Generator().manual_seed(1)
        x = torch.randn(16, 3, 56, 56, generator=g).to(device)
        labels = torch.randint(0, 10, (16,), generator=g).to(device)
        loss = head(backbone(x), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        weights = torch.cat([p.detach().flatten().cpu() for p in params])
        return float(loss.detach()), weights

    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    threads = torch.get_num_threads()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.set_num_threads(1)  # a tiny step: many threads only contend (measured 0.06 s vs 5 s)
    try:
        loss_cpu, w_cpu = step("cpu")
        loss_gpu, w_gpu = step(gpu)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
        torch.set_num_threads(threads)
    rel_loss = abs(loss_cpu - loss_gpu) / max(1e-12, abs(loss_cpu))
    rel_w = float((w_cpu - w_gpu).abs().max() / w_cpu.abs().max().clamp_min(1e-12))
    ok = rel_loss <= TOL_TRAIN and rel_w <= TOL_TRAIN
    return agreement(ok, f"loss {loss_cpu:.5f} vs {loss_gpu:.5f}; max weight diff {rel_w:.1e} rel")
