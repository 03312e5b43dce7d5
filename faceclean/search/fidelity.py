"""Multi-fidelity search: successive halving in whole batches, and the search's cost.

A trial's ``budget`` is its share of a full trial, in (0, 1] (the CLI maps it to training
steps). With ``rungs`` R and reduction ``eta``, a bracket runs R rungs: rung r runs
B * eta^(R-1-r) trials (eta^(R-1-r) steps of the batch B) at budget eta^(r-(R-1)); rung 0
draws new combinations from the search's sampler (PPO's controller, random, TPE, ...),
rung r > 0 re-runs the best B * eta^(R-1-r) combinations of rung r-1 of the same bracket
(ranked by their reward) at eta times the budget. With eta = 3 and R = 3 a bracket tries
9 B combinations at 1/9, 3 B at 1/3 and B at full budget: 3 B full trials' cost for 9 B
combinations explored, of which B are measured at full fidelity. Every promotion depends
only on the log, so a resumed search promotes the same combinations.
"""

from __future__ import annotations

import numpy as np


class Schedule:
    """Where a step of a multi-fidelity search stands: its bracket, rung and budget."""

    def __init__(self, batch: int, eta: int = 3, rungs: int = 3):
        if eta < 2 or rungs < 1:
            raise ValueError("successive halving needs eta >= 2 and >= 1 rung")
        self.batch, self.eta, self.rungs = batch, eta, rungs
        self.steps_per_rung = [eta ** (rungs - 1 - r) for r in range(rungs)]
        self.bracket_steps = sum(self.steps_per_rung)

    def budget(self, rung: int) -> float:
        """The budget of a rung: eta^(rung - (rungs - 1)); 1 at the last rung."""
        return float(self.eta ** (rung - (self.rungs - 1)))

    def locate(self, step: int) -> tuple[int, int, int]:
        """(bracket, rung, index of the step within its rung) of ``step``."""
        bracket, pos = divmod(step, self.bracket_steps)
        for rung, n in enumerate(self.steps_per_rung):
            if pos < n:
                return bracket, rung, pos
            pos -= n
        raise AssertionError("unreachable")

    def rung_start(self, bracket: int, rung: int) -> int:
        """The first step of ``rung`` in ``bracket``."""
        return bracket * self.bracket_steps + sum(self.steps_per_rung[:rung])

    def fresh_steps_before(self, step: int) -> int:
        """How many rung-0 (newly sampled) steps come before ``step``."""
        bracket, rung, k = self.locate(step)
        return bracket * self.steps_per_rung[0] + (k if rung == 0 else self.steps_per_rung[0])

    def promoted(self, step: int, done: dict[int, dict], bias: BiasModel | None = None):
        """The B finished trials of the previous rung whose combinations ``step`` (of a rung
        > 0) re-runs: the previous rung's trials ranked by reward (with ``bias``: by their
        reward corrected to full budget, the model fitted on ``done``; ties: earlier trial
        first), the k-th slice of B of its best B * eta^(R-1-rung)."""
        bracket, rung, k = self.locate(step)
        if rung == 0:
            raise ValueError(f"step {step} samples new combinations; it promotes none")
        first = self.rung_start(bracket, rung - 1) * self.batch
        ids = range(first, first + self.steps_per_rung[rung - 1] * self.batch)
        prev = [done[i] for i in ids]
        score = [t["reward"] for t in prev]
        if bias is not None:
            score = bias.fit(done).correct(prev[0]["budget"], [t["tokens"] for t in prev], score)
        order = sorted(range(len(prev)), key=lambda j: (-score[j], prev[j]["trial"]))
        ranked = [prev[j] for j in order]
        best = ranked[: self.steps_per_rung[rung] * self.batch]
        return best[k * self.batch : (k + 1) * self.batch]


def spent(trials: list[dict] | dict) -> float:
    """The cost of finished trials in full trials: the sum of their budgets (1 without)."""
    records = trials.values() if isinstance(trials, dict) else trials
    return float(sum(t.get("budget", 1.0) for t in records))


class BiasModel:
    """A model of what a short trial gets wrong, learnt from the promotions: each promoted
    combination was measured at two budgets b < b', and short training under-rates some
    combinations (big models, hard losses) more than others. The model assumes the
    shortfall of a trial at budget b is (1 - b) * f(x), f linear in the token coordinates x
    in [0, 1] (a modelling choice: smooth in model size and loss hardness, zero at the full
    budget), so a pair gives (r' - r) / (b' - b) = f(x) + noise; f is fitted by ridge
    regression on every pair, weighted by (b' - b)^2 (a short trial's noise is divided by
    b' - b). ``correct(b, tokens, r)`` = r + (1 - b) f(x) then estimates the full-budget
    reward. Fewer than ``min_pairs`` pairs: no correction."""

    def __init__(self, sizes: list[int], l2: float = 1.0, min_pairs: int = 8):
        self.sizes = np.asarray(sizes)
        self.l2, self.min_pairs = l2, min_pairs
        self.w: np.ndarray | None = None

    def features(self, tokens) -> np.ndarray:
        u = np.asarray(tokens, dtype=np.float64) / np.maximum(self.sizes - 1, 1)
        return np.concatenate([np.ones((len(u), 1)), u], 1)

    def fit(self, done: dict[int, dict]) -> BiasModel:
        """Fit f on every finished promotion in ``done`` (trial id -> record)."""
        pairs = [
            (done[t["promoted_from"]], t)
            for t in done.values()
            if t.get("promoted_from") is not None and t["promoted_from"] in done
        ]
        if len(pairs) < self.min_pairs:
            self.w = None
            return self
        x = self.features([c["tokens"] for _, c in pairs])
        gap = np.asarray([c["budget"] - p["budget"] for p, c in pairs])
        y = np.asarray([(c["reward"] - p["reward"]) for p, c in pairs]) / gap
        sw = gap**2 / np.mean(gap**2)  # mean weight 1, so l2 means the same at any eta
        reg = self.l2 * np.eye(x.shape[1])
        reg[0, 0] = 1e-9  # the intercept is not shrunk
        self.w = np.linalg.solve(x.T @ (x * sw[:, None]) + reg, x.T @ (sw * y))
        return self

    def correct(self, budget: float, tokens, rewards) -> np.ndarray:
        """Estimated full-budget rewards of trials at ``budget`` with ``tokens`` [N, T]."""
        rewards = np.asarray(rewards, dtype=np.float64)
        if self.w is None or budget >= 1.0:
            return rewards
        return rewards + (1.0 - budget) * self.features(tokens) @ self.w

    def estimates(self, done: dict[int, dict]) -> dict[int, float]:
        """Each rung-0 trial's best estimate of its full-budget reward: the reward of the
        longest trial of its combination (promotions re-run it), corrected to full budget."""
        longest: dict[int, dict] = {}
        for t in sorted(done.values(), key=lambda t: t["trial"]):
            root = t
            while root.get("promoted_from") is not None and root["promoted_from"] in done:
                root = done[root["promoted_from"]]
            if root["trial"] not in longest or t["budget"] > longest[root["trial"]]["budget"]:
                longest[root["trial"]] = t
        return {
            i: float(self.correct(t["budget"], [t["tokens"]], [t["reward"]])[0])
            for i, t in longest.items()
        }
