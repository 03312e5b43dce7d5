"""`faceclean train` under torchrun on CPU (gloo) with the model-parallel head: the
checkpoint holds the whole head, gathered from every rank, and the run resumes on a
different number of processes."""

import json
import socket
import subprocess
import sys

import pytest
import torch

from faceclean.data.synthetic import make_face_folder
from faceclean.training.losses import create_head
from faceclean.training.run import TrainConfig, build_backbone
from faceclean.training.train import train

SCRIPT = """
import json, sys
from faceclean.training.run import TrainConfig
from faceclean.training.train import train
cfg = TrainConfig(**json.loads(sys.argv[1]))
train(cfg, sys.argv[2], stop_after_epochs=int(sys.argv[3]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(n: int, script, cfg: TrainConfig, run_dir, epochs: int) -> None:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(n),
        "--master_port",
        str(free_port()),
        str(script),
        json.dumps(cfg.__dict__),
        str(run_dir),
        str(epochs),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow  # three torchrun launches
def test_sharded_head_checkpoint_is_whole_and_resumes_on_other_process_counts(tmp_path):
    data = make_face_folder(tmp_path / "train", 7, 8, size=56, seed=2)
    cfg = TrainConfig(
        clean_list=str(data),
        input_size=32,
        embedding_size=16,
        width=0.25,
        depth=0.5,
        loss="npcface",
        loss_kwargs={"s": 16},
        sample_rate=0.5,
        epochs=3,
        batch_size=6,
        workers=0,
        device="cpu",
    )
    script = tmp_path / "run_train.py"
    script.write_text(SCRIPT)
    run = tmp_path / "run"
    torchrun(3, script, cfg, run, 1)  # 7 classes over 3 ranks: blocks of 3, 2, 2
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    torch.manual_seed(cfg.seed)
    n_params = len(list(build_backbone(cfg).parameters()))
    initial = create_head(cfg.loss, 16, 7, **cfg.loss_kwargs).weight
    assert state["head"]["weight"].shape == (7, 16)
    moved = (state["head"]["weight"] - initial).norm(dim=1)
    assert (moved > 1e-6).all()  # every rank's block was trained and gathered
    momentum = state["optimiser"]["state"][n_params]["momentum_buffer"]
    assert momentum.shape == (7, 16)  # the head's momentum is gathered too
    torchrun(2, script, cfg, run, 1)  # epoch 2 on two processes
    train(cfg, run)  # epoch 3 in this one process
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    # 56 images: 3 x 6 per step -> 3 steps, then 2 x 6 -> 4 steps, then 6 -> 9 steps.
    assert [r["step"] for r in lines] == [3, 7, 16]
    final = torch.load(run / "checkpoint.pt", weights_only=True)
    assert final["head"]["draws"].item() == 16  # Partial FC draws carried across layouts
    assert torch.isfinite(final["head"]["weight"]).all()
