"""The paper's Table 1 protocol, shared by bench_search_demo.py (demo data) and
search_table1_orl.py (ORL): the baseline combination trained once, and each arm (the
tokens of one aspect, or all of them) searched exactly as `faceclean search` runs, its
best combination re-trained for longer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from faceclean.search.face_search import run_search
from faceclean.search.space import BASELINE
from faceclean.search.trial import FaceTrial

ARMS = ("data", "loss", "backbone", "all")


@dataclass
class Table1:
    """One data set (noisy training embeddings, validation identities, training image
    root), the ACC FARs, and the budget every arm gets: ``steps`` x ``batch`` trials
    (PPO's first ``warmup_trials`` uniform), the best re-trained ``retrain_epochs``."""

    noisy: Path
    val: Path
    root: Path
    fars: tuple
    steps: int
    batch: int
    retrain_epochs: int
    warmup_trials: int

    def baseline(self, out: Path, train_kwargs: dict, seed: int, run_name: str) -> float:
        """ACC of the baseline (no cleaning, ArcFace s=64 m=0.5, W = D = 1) trained with
        ``train_kwargs``, its run in ``out / run_name``."""
        trial = FaceTrial(
            str(self.noisy), str(self.val), str(out), str(self.root), train_kwargs, self.fars
        )
        return trial(dict(BASELINE), seed, run_name=run_name)["acc"]

    def arm(
        self,
        out: Path,
        aspects: str,
        trial_kwargs: dict,
        seed: int,
        console: Console | None = None,
    ) -> dict:
        """The search over ``aspects`` in ``out`` (resumed if it holds one); the summary
        of :func:`run_search`, whose ``["retrained"][0]`` is the best re-trained."""
        return run_search(
            self.noisy,
            self.val,
            out,
            data_root=self.root,
            steps=self.steps,
            batch=self.batch,
            aspects=aspects,
            train_kwargs=trial_kwargs,
            fars=self.fars,
            retrain_top=1,
            retrain_epochs=self.retrain_epochs,
            seed=seed,
            console=console,
            resume=(out / "state.pt").exists(),
            controller={"warmup_trials": self.warmup_trials},
        )
