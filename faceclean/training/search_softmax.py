"""Search-Softmax as its paper runs it: a reward-guided search over the loss's ``a``
(Wang et al., "Loss Function Search for Face Recognition", ICML 2020).

Each epoch e, B copies of the model start from the same weights (the previous epoch's best
copy) and train one epoch with their own a_i ~ N(mu, sigma) (clipped to [a_min, 0], where
h(a, p) <= 1); each copy is scored on validation identities (reward r_i: the paper's ACC
= 0.5 TAR@1e-3 + 0.25 TAR@1e-4 + 0.25 TAR@1e-5, or the mean TAR over other FARs); mu moves
by the policy gradient of the rewards through the Gaussian's log-density,

    grad_mu = mean_i A_i * (a_i - mu) / sigma^2,   A_i = (r_i - mean r) / std r,
    mu <- mu + lr * sigma^2 * grad_mu      (a natural-gradient step: about lr * sigma),

and the best copy's weights start the next epoch. The last best model is the result (the
run folder's ``checkpoint.pt``). ``search_softmax.jsonl`` logs (epoch, copy, a, reward, mu)
per copy, ``search_softmax.json`` the state (epoch, mu): a killed search resumes.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from faceclean.data.store import atomic_path
from faceclean.errors import FacecleanError
from faceclean.training.run import TrainConfig
from faceclean.training.train import evaluate_run, train
from faceclean.training.verification import FARS, search_score

# (epoch, copy, a, start checkpoint or None) -> (the copy's checkpoint, reward)
TrainCopy = Callable[[int, int, float, Path | None], tuple[Path, float]]


def draw_as(mu: float, sigma: float, copies: int, seed: int, epoch: int) -> np.ndarray:
    """The B unclipped draws a_i ~ N(mu, sigma) of an epoch, keyed by (seed, epoch)."""
    return np.random.default_rng((seed, epoch, 7919)).normal(mu, sigma, copies)


def policy_step(mu: float, sigma: float, draws, rewards, lr: float) -> float:
    """mu after one REINFORCE step on the Gaussian's mean with normalised rewards (equal
    rewards carry no signal: mu stays)."""
    r = np.asarray(rewards, np.float64)
    a = np.asarray(draws, np.float64)
    if len(r) < 2 or r.std() == 0:
        return mu
    advantage = (r - r.mean()) / r.std()
    grad = float(np.mean(advantage * (a - mu) / sigma**2))
    return mu + lr * sigma**2 * grad


def reward_guided_search(
    out_dir: str | Path,
    epochs: int,
    copies: int,
    train_copy: TrainCopy,
    mu: float = -1.0,
    sigma: float = 0.5,
    lr: float = 1.0,
    a_min: float = -5.0,
    seed: int = 0,
) -> dict:
    """Run (or resume) the search; ``train_copy`` trains and scores one copy. Returns
    {"mu", "best_a", "best_reward", "checkpoint"}; the best checkpoint of the last epoch
    is copied to ``out_dir/checkpoint.pt``."""
    if copies < 2:
        raise FacecleanError(f"the search needs at least 2 copies per epoch, got {copies}")
    if sigma <= 0:
        raise FacecleanError(f"sigma = {sigma}: the search distribution needs sigma > 0")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state_path, log_path = out_dir / "search_softmax.json", out_dir / "search_softmax.jsonl"
    state = {"epoch": 0, "mu": mu, "best_a": None, "best_reward": None}
    if state_path.exists():
        state = json.loads(state_path.read_text())
    best_ckpt = out_dir / "checkpoint.pt"
    for epoch in range(state["epoch"], epochs):
        draws = draw_as(state["mu"], sigma, copies, seed, epoch)
        used = np.clip(draws, a_min, 0.0)
        start = best_ckpt if epoch > 0 else None
        results = [train_copy(epoch, i, float(used[i]), start) for i in range(copies)]
        rewards = [r for _, r in results]
        new_mu = policy_step(state["mu"], sigma, draws, rewards, lr)
        best = int(np.argmax(rewards))
        with open(log_path, "a") as f:
            for i in range(copies):
                row = {"epoch": epoch + 1, "copy": i, "a": float(used[i]), "reward": rewards[i]}
                f.write(json.dumps({**row, "mu": new_mu, "best": i == best}) + "\n")
        with atomic_path(best_ckpt) as tmp:
            shutil.copyfile(results[best][0], tmp)
        state = {
            "epoch": epoch + 1,
            "mu": new_mu,
            "best_a": float(used[best]),
            "best_reward": rewards[best],
        }
        with atomic_path(state_path) as tmp:
            tmp.write_text(json.dumps(state))
    return {**state, "checkpoint": str(best_ckpt)}


def search_softmax_train(
    cfg: TrainConfig,
    run_dir: str | Path,
    val: str | Path,
    copies: int,
    sigma: float = 0.5,
    lr: float = 1.0,
    fars=(1e-3, 1e-4, 1e-5),
) -> dict:
    """``faceclean train --loss search-softmax --search-copies B``: the reward-guided
    search over ``cfg.epochs`` epochs, copies trained with ``train`` in
    ``run_dir/copies/epoch<e>/copy<i>`` and scored by ``evaluate_run`` on ``val``.
    ``run_dir`` ends as an ordinary run folder holding the last best model."""
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise FacecleanError("--search-copies runs in one process; run it without torchrun")
    if cfg.loss != "search-softmax":
        raise FacecleanError(f"--search-copies needs --loss search-softmax, not {cfg.loss!r}")
    run_dir = Path(run_dir)
    kwargs = {k: v for k, v in cfg.loss_kwargs.items() if k not in ("a", "random")}
    a_min = float(kwargs.get("a_min", -5.0))

    def train_copy(epoch: int, i: int, a: float, start: Path | None) -> tuple[Path, float]:
        copy_dir = run_dir / "copies" / f"epoch{epoch + 1}" / f"copy{i}"
        if i == 0:  # the previous epoch's best is in run_dir/checkpoint.pt by now
            shutil.rmtree(run_dir / "copies" / f"epoch{epoch}", ignore_errors=True)
        copy_cfg = replace(cfg, loss_kwargs={**kwargs, "a": a})
        ckpt = copy_dir / "checkpoint.pt"
        done = ckpt.exists() and torch.load(ckpt, weights_only=True)["epoch"] > epoch
        if not done:
            if start is not None and not ckpt.exists():
                copy_dir.mkdir(parents=True, exist_ok=True)
                state = torch.load(start, weights_only=True)
                state["head"]["a_value"] = torch.tensor(a, dtype=torch.float64)
                with atomic_path(ckpt) as tmp:
                    torch.save(state, tmp)
            train(copy_cfg, copy_dir, stop_after_epochs=1)
        scores = evaluate_run(copy_dir, val, fars)
        tars = [scores[f"tar@far={f:g}"] for f in fars]
        reward = (
            search_score({f: (t, True) for f, t in zip(fars, tars, strict=True)})
            if tuple(fars) == FARS
            else float(np.mean(tars))
        )
        return ckpt, reward

    mu0 = float(cfg.loss_kwargs.get("a", -1.0))
    result = reward_guided_search(
        run_dir, cfg.epochs, copies, train_copy, mu0, sigma, lr, a_min, cfg.seed
    )
    final_cfg = replace(cfg, loss_kwargs={**kwargs, "a": result["best_a"]})
    with atomic_path(run_dir / "config.json") as tmp:
        tmp.write_text(json.dumps(json.loads(json.dumps(asdict(final_cfg))), indent=2))
    shutil.rmtree(run_dir / "copies", ignore_errors=True)
    return {"run_dir": str(run_dir), **result}
