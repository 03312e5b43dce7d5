"""Samplers and executors of the search besides the PPO controller: Search-Softmax's
Gaussian search, Optuna TPE, a spawn-based local process pool and Ray tasks for running
trials on a cluster."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from faceclean.errors import FacecleanError
from faceclean.search.space import TOKENS, SearchSpace


def run_trial(trial_fn, combo: dict, seed: int, budget: float | None = None) -> dict:
    """``trial_fn(combo, seed)`` (``budget=budget`` too, when given) timed; an exception
    becomes ``{"error": ...}`` (a failed trial is data, not the end of the search)."""
    t0 = time.perf_counter()
    try:
        kwargs = {} if budget is None else {"budget": budget}
        out = dict(trial_fn(combo, seed, **kwargs))
        out["error"] = None
    except Exception as e:
        out = {"acc": None, "macs": None, "error": f"{type(e).__name__}: {str(e)[:300]}"}
    out["wall_s"] = time.perf_counter() - t0
    return out


def uniform_novel(
    sizes: list[int], n: int, tried: set[tuple[int, ...]], rng: np.random.Generator
) -> np.ndarray:
    """``n`` token rows [n, T] drawn uniformly, each untried and distinct (after 100 rounds
    of rejection, repeats are allowed: a nearly exhausted space)."""
    rows: list[tuple[int, ...]] = []
    taken = set(tried)
    for _ in range(100):
        for row in np.stack([rng.integers(0, k, 4 * n) for k in sizes], 1).tolist():
            if tuple(row) not in taken:
                taken.add(tuple(row))
                rows.append(tuple(row))
            if len(rows) == n:
                return np.asarray(rows, dtype=np.int64)
    extra = np.stack([rng.integers(0, k, n - len(rows)) for k in sizes], 1)
    return np.concatenate([np.asarray(rows, dtype=np.int64).reshape(-1, len(sizes)), extra])


def mutations(
    parent: list[int], sizes: list[int], n: int, tried: set[tuple[int, ...]], rng
) -> np.ndarray:
    """``n`` token rows [n, T], each ``parent`` with one or two tokens (even odds) set to
    another choice, untried and distinct (after 100 rounds of rejection, uniform untried
    rows fill the rest: a neighbourhood tried out)."""
    rows: list[tuple[int, ...]] = []
    taken = set(tried)
    movable = [t for t, k in enumerate(sizes) if k > 1]
    for _ in range(100 * n):
        row = list(parent)
        for t in rng.choice(movable, min(len(movable), 1 + int(rng.integers(0, 2))), False):
            row[t] = (row[t] + 1 + int(rng.integers(0, sizes[t] - 1))) % sizes[t]
        if tuple(row) not in taken:
            taken.add(tuple(row))
            rows.append(tuple(row))
        if len(rows) == n:
            return np.asarray(rows, dtype=np.int64)
    rest = uniform_novel(sizes, n - len(rows), taken, rng)
    return np.concatenate([np.asarray(rows, dtype=np.int64).reshape(-1, len(sizes)), rest])


def _init_worker(parent: int, threads: int) -> None:
    """Worker initializer: use ``threads`` torch threads (N workers with every core's worth
    of OpenMP threads each oversubscribe the CPU: on a busy 2-core machine two threads made
    a training step ~20x slower than one), and exit as soon as the parent dies (a SIGKILLed
    search must not leave its trials training on)."""
    import torch

    torch.set_num_threads(threads)

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def local_pool(workers: int) -> ProcessPoolExecutor:
    """A process pool that spawns its workers (a forked child inherits torch's OpenMP
    state and can hang in its barrier), shares the cores among them, and whose workers die
    with the parent."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    return ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(os.getpid(), threads),
    )


def make_pool(workers: int, ray_address: str | None, gpus_per_trial: float = 1.0):
    """The executor of a search: Ray tasks with ``ray_address``, else a local spawn pool
    when ``workers > 1``, else None (trials run in this process)."""
    if ray_address:
        return RayPool(ray_address, workers, run_trial, gpus_per_trial)
    return local_pool(workers) if workers > 1 else None


class RayPool:
    """Trials as Ray tasks (``gpus_per_trial`` GPUs each when the cluster has GPUs, so 0.5
    caps a GPU at two concurrent trials; else one CPU each): the executor for a cluster.
    ``address="local"`` starts a private local instance; ``run`` is the function each task
    runs."""

    def __init__(self, address: str, workers: int, run, gpus_per_trial: float = 1.0):
        if not 0 < gpus_per_trial <= 64:
            raise FacecleanError(f"GPUs per trial must be in (0, 64], got {gpus_per_trial}")
        try:
            import ray
        except ImportError:
            raise FacecleanError(
                "--ray-address needs Ray: pip install 'faceclean[search]'"
            ) from None
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            if address == "local":
                ray.init(num_cpus=max(1, workers), include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, log_to_driver=False)
        gpus = ray.cluster_resources().get("GPU", 0)
        self.task = ray.remote(num_gpus=gpus_per_trial if gpus else 0, num_cpus=0 if gpus else 1)(
            run
        )

    def submit(self, fn, *args):
        ref = self.task.remote(*args)
        ray = self.ray

        class _Future:
            def result(self):
                return ray.get(ref)

        return _Future()

    def shutdown(self):
        if self.started:
            self.ray.shutdown()


class GaussianSearch:
    """Search-Softmax's reward-guided Gaussian search, on token indices: each token is
    drawn from N(mu_t, sigma_t) (rounded, clipped to its choices), and after each batch
    mu moves along the reward-weighted direction: mu += lr * mean(A_i (x_i - mu)), A the
    standardised rewards. Meant for loss-only search (--space loss), usable on any tokens."""

    def __init__(self, sizes: list[int], lr: float = 0.5, sigma: float = 0.25):
        self.sizes = np.asarray(sizes)
        self.mu = (self.sizes - 1) / 2.0
        self.sigma = np.maximum(sigma * (self.sizes - 1), 1e-3)
        self.lr = lr

    def sample(self, batch: int, rng: np.random.Generator) -> np.ndarray:
        x = rng.normal(self.mu, self.sigma, (batch, len(self.sizes)))
        return np.clip(np.rint(x), 0, self.sizes - 1).astype(np.int64)

    def update(self, tokens: np.ndarray, rewards: np.ndarray) -> None:
        if len(rewards) < 2 or rewards.std() == 0:
            return
        adv = (rewards - rewards.mean()) / rewards.std()
        self.mu = np.clip(
            self.mu + self.lr * (adv[:, None] * (tokens - self.mu)).mean(0), 0, self.sizes - 1
        )


def tpe_study(space: SearchSpace, seed: int, history: list[dict]):
    """An Optuna TPE study over token indices, with ``history`` (finished trials) replayed."""
    try:
        import optuna
    except ImportError:
        raise FacecleanError("--method tpe needs Optuna: pip install 'faceclean[search]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = {
        t: optuna.distributions.IntDistribution(0, n - 1)
        for t, n in zip(TOKENS, space.sizes, strict=True)
    }
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    for rec in history:
        study.add_trial(
            optuna.trial.create_trial(
                params=dict(zip(TOKENS, rec["tokens"], strict=True)),
                distributions=dists,
                value=rec["reward"],
            )
        )
    return study, dists
