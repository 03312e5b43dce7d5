"""Teacher top-k filtering during training (LATSE): a sample updates the student only when
its label is among a fixed teacher's k most likely classes — one more cleaning strategy,
applied on the fly instead of before training.

The teacher is a finished `faceclean train` run over the same label space (its classifier
has one row per class of the student's list) and the same input size.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from faceclean.errors import FacecleanError
from faceclean.training.run import load_run, read_checkpoint


class TeacherFilter:
    """``mask(x, y)``: which samples of a batch the teacher lets through."""

    def __init__(
        self, run_dir: str | Path, k: int, num_classes: int, input_size: int, device: torch.device
    ):
        if k < 1:
            raise FacecleanError(f"teacher top-k must be at least 1, got {k}")
        self.model, cfg = load_run(run_dir, device=str(device))
        state = read_checkpoint(Path(run_dir) / "checkpoint.pt", device)
        self.weight = F.normalize(state["head"]["weight"].to(device))
        if len(self.weight) != num_classes:
            raise FacecleanError(
                f"the teacher has {len(self.weight)} classes, the training list {num_classes}; "
                "it must be trained on the same label space",
                run_dir,
            )
        if cfg.input_size != input_size:
            raise FacecleanError(
                f"the teacher takes {cfg.input_size} px inputs, the student {input_size}", run_dir
            )
        self.k = min(k, num_classes)
        self.model.to(device)

    @torch.no_grad()
    def mask(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """bool [N]: True where label y_i is in the teacher's top-k classes for image x_i."""
        cos = F.normalize(self.model(x).float()) @ self.weight.T
        return (cos.topk(self.k, dim=1).indices == y[:, None]).any(1)
