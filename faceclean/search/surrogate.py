"""A cheap search objective with a known structure, for benchmarks and tests."""

from __future__ import annotations

import numpy as np

from faceclean.search.space import TOKENS, SearchSpace


class SurrogateObjective:
    """A cheap objective with a known optimum and coupled tokens, for benchmarks and tests.

    acc = exp(-Σ_t w_t (u_t - u*_t)^2 - c (u_data - u_loss)^2 ...) in index units u in
    [0, 1]; the data and loss tokens interact (the best loss depends on the cleaning), as
    the paper argues they do. macs grow with width^2 * depth.
    """

    def __init__(self, space: SearchSpace, seed: int = 0, noise: float = 0.0):
        rng = np.random.default_rng(seed)
        self.space = space
        self.opt = rng.uniform(0.2, 0.8, len(TOKENS))
        self.weights = rng.uniform(1.0, 4.0, len(TOKENS))
        self.noise = noise

    def unit(self, combo: dict) -> np.ndarray:
        u = []
        for t in TOKENS:
            ch = self.space.choices[t]
            u.append(ch.index(combo[t]) / max(1, len(ch) - 1))
        return np.asarray(u)

    def __call__(self, combo: dict, seed: int) -> dict:
        u = self.unit(combo)
        d = u - self.opt
        coupled = (d[0] - d[2]) ** 2 + (d[1] + d[5]) ** 2  # data x loss interactions
        acc = float(np.exp(-(self.weights * d**2).sum() - 3.0 * coupled))
        if self.noise:
            acc += float(np.random.default_rng(seed).normal(0, self.noise))
        return {"acc": acc, "macs": combo["width"] ** 2 * combo["depth"]}
