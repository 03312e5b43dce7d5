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

    def promoted(self, step: int, done: dict[int, dict]) -> list[dict]:
        """The B finished trials of the previous rung whose combinations ``step`` (of a rung
        > 0) re-runs: the previous rung's trials ranked by reward (ties: earlier trial
        first), the k-th slice of B of its best B * eta^(R-1-rung)."""
        bracket, rung, k = self.locate(step)
        if rung == 0:
            raise ValueError(f"step {step} samples new combinations; it promotes none")
        first = self.rung_start(bracket, rung - 1) * self.batch
        ids = range(first, first + self.steps_per_rung[rung - 1] * self.batch)
        ranked = sorted((done[i] for i in ids), key=lambda t: (-t["reward"], t["trial"]))
        best = ranked[: self.steps_per_rung[rung] * self.batch]
        return best[k * self.batch : (k + 1) * self.batch]


def spent(trials: list[dict] | dict) -> float:
    """The cost of finished trials in full trials: the sum of their budgets (1 without)."""
    records = trials.values() if isinstance(trials, dict) else trials
    return float(sum(t.get("budget", 1.0) for t in records))
