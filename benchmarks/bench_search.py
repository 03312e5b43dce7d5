"""Search efficiency on a cheap surrogate objective with a known structure and coupled
tokens (faceclean.search.surrogate.SurrogateObjective): the number of trials each method needs to
sample a combination in the top 1% of rewards, median over seeds; and the controller +
bookkeeping overhead per trial.

    python benchmarks/bench_search.py [--seeds 5] [--budget 400] [--batch 8]

TPE runs when Optuna is installed (pip install optuna); otherwise it is reported skipped.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from faceclean.search.loop import search
from faceclean.search.space import TOKENS, load_space
from faceclean.search.surrogate import SurrogateObjective


def top1_threshold(space, obj, n: int = 200_000, seed: int = 123) -> float:
    rng = np.random.default_rng(seed)
    idx = np.stack([rng.integers(0, k, n) for k in space.sizes], 1)
    rewards = [obj(space.decode(list(row)), 0)["acc"] for row in idx]
    return float(np.quantile(rewards, 0.99))


def trials_to_reach(rewards: list[float], threshold: float) -> int | None:
    for i, r in enumerate(rewards):
        if r >= threshold:
            return i + 1
    return None


def run_tpe(space, obj, budget: int, seed: int) -> list[float]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed)
    study = optuna.create_study(direction="maximize", sampler=sampler)

    def objective(trial):
        combo = {
            t: space.choices[t][trial.suggest_int(t, 0, len(space.choices[t]) - 1)] for t in TOKENS
        }
        return obj(combo, 0)["acc"]

    study.optimize(objective, n_trials=budget)
    return [t.value for t in study.trials]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--budget", type=int, default=400)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    space = load_space()
    results: dict[str, list] = {"ppo": [], "random": [], "tpe": []}
    overhead = []
    for seed in range(args.seeds):
        obj = SurrogateObjective(space, seed=seed)
        threshold = top1_threshold(space, obj)
        for method in ("ppo", "random"):
            with tempfile.TemporaryDirectory() as tmp:
                t = time.perf_counter()
                r = search(
                    space,
                    obj,
                    Path(tmp),
                    steps=args.budget // args.batch,
                    batch=args.batch,
                    method=method,
                    seed=seed,
                    alpha=0.0,
                    lr=5e-3,
                )
                if method == "ppo":
                    overhead.append((time.perf_counter() - t) / len(r.trials))
            results[method].append(trials_to_reach([x["reward"] for x in r.trials], threshold))
        if results["tpe"] is None:
            continue
        try:
            results["tpe"].append(
                trials_to_reach(run_tpe(space, obj, args.budget, seed), threshold)
            )
        except ImportError:
            results["tpe"] = None
    print(
        f"trials to reach the top 1% (budget {args.budget}, batch {args.batch}; "
        f"None = not reached), {args.seeds} seeds:"
    )
    for method, values in results.items():
        if values is None:
            print(f"  {method:<7} skipped (optuna not installed)")
            continue
        reached = [v if v is not None else args.budget + 1 for v in values]
        print(f"  {method:<7} per seed {values}  median {np.median(reached):.0f}")
    print(
        f"controller + bookkeeping per trial (PPO, surrogate trial ~10 us): "
        f"{np.mean(overhead) * 1e3:.1f} ms"
    )


if __name__ == "__main__":
    main()
