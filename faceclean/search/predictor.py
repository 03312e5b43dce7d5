"""A reward predictor that screens the controller's proposals.

Trials cost minutes to hours; fitting a regression on every finished trial costs
milliseconds to a second. So the PPO search can draw more candidates from its policy than
it runs, and run the ones this predictor rates best: it sees every trial so far, which the
on-policy controller does not.
"""

from __future__ import annotations

import numpy as np


def one_hot(tokens: np.ndarray, sizes: list[int]) -> np.ndarray:
    """Token indices [N, T] -> one-hot features [N, sum(sizes)] (float64)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    out = np.zeros((len(tokens), int(sum(sizes))))
    rows = np.repeat(np.arange(len(tokens)), len(sizes))
    out[rows, (tokens + offsets).ravel()] = 1.0
    return out


def ridge_predict(
    tokens: np.ndarray,
    rewards: np.ndarray,
    candidates: np.ndarray,
    sizes: list[int],
    l2: float = 1.0,
) -> np.ndarray:
    """Predicted rewards [M] of ``candidates`` [M, T] from an additive model (one weight
    per token choice, ridge ``l2``) fitted on finished trials ``tokens`` [N, T] with
    ``rewards`` [N]. Choices never tried predict the mean effect of their token (0)."""
    x = one_hot(tokens, sizes)
    y = np.asarray(rewards, dtype=np.float64)
    mean = y.mean()
    w = np.linalg.solve(x.T @ x + l2 * np.eye(x.shape[1]), x.T @ (y - mean))
    return mean + one_hot(candidates, sizes) @ w


def unit(tokens: np.ndarray, sizes: list[int]) -> np.ndarray:
    """Token indices [N, T] -> coordinates in [0, 1] (index / (n - 1); 0 for a fixed token)."""
    return np.asarray(tokens, dtype=np.float64) / np.maximum(np.asarray(sizes) - 1, 1)


def kernel_predict(
    tokens: np.ndarray,
    rewards: np.ndarray,
    candidates: np.ndarray,
    sizes: list[int],
    scales: tuple[float, ...] = (0.15, 0.3, 0.6, 1.2),
    l2s: tuple[float, ...] = (1e-3, 1e-2, 1e-1),
) -> np.ndarray:
    """Predicted rewards [M] of ``candidates`` [M, T]: kernel ridge regression (a GP's
    posterior mean) with an RBF kernel on the token coordinates in [0, 1], fitted on
    finished trials ``tokens`` [N, T] with ``rewards`` [N]. The kernel's length scale and
    the ridge are chosen per call by exact leave-one-out error, so the predictor adapts
    from smooth to rugged rewards as the trials accumulate."""
    x, c = unit(tokens, sizes), unit(candidates, sizes)
    y = np.asarray(rewards, dtype=np.float64)
    mean, sd = y.mean(), y.std() + 1e-12
    z = (y - mean) / sd
    d2 = ((x[:, None, :] - x[None]) ** 2).sum(-1)
    best = (np.inf, None, None)
    for scale in scales:
        vals, vecs = np.linalg.eigh(np.exp(-d2 / (2 * scale**2)))
        proj = vecs.T @ z
        for l2 in l2s:
            inv_diag = (vecs**2 / (vals + l2)).sum(1)  # diag of (K + l2 I)^-1
            alpha = vecs @ (proj / (vals + l2))
            loo = float(np.mean((alpha / inv_diag) ** 2))  # exact leave-one-out residuals
            if loo < best[0]:
                best = (loo, scale, alpha)
    _, scale, alpha = best
    dc = ((c[:, None, :] - x[None]) ** 2).sum(-1)
    return mean + sd * (np.exp(-dc / (2 * scale**2)) @ alpha)


PREDICTORS = {"kernel": kernel_predict, "ridge": ridge_predict}


def screen(
    candidates: np.ndarray,
    history: list[dict],
    sizes: list[int],
    keep: int,
    predictor: str = "kernel",
    max_history: int = 1000,
) -> tuple[np.ndarray, list[float]]:
    """Which ``keep`` of ``candidates`` [M, T] to run: (their row indices, best first;
    their predicted rewards). The predictor is fitted on the finished trials ``history``
    (records with "tokens" and "reward"; failed trials count with their failure reward).
    Past ``max_history`` trials it sees the best and the most recent half each, so a
    step stays cheap (the kernel fit is cubic in the trials it sees)."""
    if len(history) > max_history:
        n, half = len(history), max_history // 2
        best = sorted(range(n), key=lambda i: -history[i]["reward"])[:half]
        recent = range(n - (max_history - half), n)
        history = [history[i] for i in sorted(set(best).union(recent))]
    tokens = np.asarray([t["tokens"] for t in history])
    rewards = np.asarray([t["reward"] for t in history], dtype=np.float64)
    pred = PREDICTORS[predictor](tokens, rewards, candidates, sizes)
    pick = np.argsort(-pred, kind="stable")[:keep]
    return pick, [float(v) for v in pred[pick]]
