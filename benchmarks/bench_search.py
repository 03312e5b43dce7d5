"""Does the search learn? Every method run exactly as `faceclean search` runs it (the loop
`faceclean.search.search` with the CLI's defaults: batch, alpha, controller lr, PPO epochs,
entropy, warm-up; TPE batched: ask B, tell B) on the objectives of search_objectives.py
(coupled, rugged, deceptive, needle; each seed is a different instance), with the reward
R = ACC * MACs^alpha.

For each objective, method and budget (trials), over seeds: the best true (noiseless) reward
among the sampled trials, median [IQR]; the trials to the top 1% of the space (threshold
from 200,000 uniform samples), median (seeds that reached it); the rise of the moving
average, mean reward of the last 50 trials of the budget minus the first 50; and for the
deceptive and needle objectives, in how many seeds a trial landed in the narrow joint
region. No
method's schedule depends on the total budget, so the first 100 trials of a 400-trial run
are the 100-trial run: budgets are prefixes of one run per seed.

    nice -n 10 python benchmarks/bench_search.py [--seeds 20] [--budgets 100,200,400]
        [--methods ppo,random,tpe,gaussian] [--objectives coupled,rugged,deceptive]
        [--jobs 1] [--json out.json] [--explore X] [--mutate X]
        [--controller-lr X --ppo-epochs N --entropy X
        --warmup-trials N --proposals K --batch B]   (overrides: only for measuring other settings)
        [--uniform-proposals]   (ablation: screening without the policy)

``--objectives dev`` runs faceclean.search.surrogate.SurrogateObjective (noise 0.01): the
objective the controller's defaults were chosen on, kept apart from the four above.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path

# One BLAS thread per process, set before NumPy loads (spawned --jobs workers re-import this
# module): the predictor's small eigendecompositions in two processes on two cores ran ~5x
# slower with every process's default thread pool (measured: ~6 min vs ~1 min).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from search_objectives import OBJECTIVES, Objective  # noqa: E402

from faceclean.search.face_search import DEFAULTS, search  # noqa: E402
from faceclean.search.space import TOKENS, load_space  # noqa: E402
from faceclean.search.surrogate import SurrogateObjective  # noqa: E402


class Dev(Objective):
    """The tuning objective: the package's surrogate, with noise, in this interface."""

    name = "dev"

    def __init__(self, space, seed):
        super().__init__(space, seed)
        self.surrogate = SurrogateObjective(space, seed=seed)

    def acc(self, u):
        d = u - self.surrogate.opt
        coupled = (d[:, 0] - d[:, 2]) ** 2 + (d[:, 1] + d[:, 5]) ** 2
        return np.exp(-(self.surrogate.weights * d**2).sum(1) - 3.0 * coupled)


def make_objective(name: str, space, seed: int) -> Objective:
    return Dev(space, seed) if name == "dev" else OBJECTIVES[name](space, seed)


def top1_threshold(obj: Objective, alpha: float, n: int = 200_000) -> float:
    rng = np.random.default_rng(123)
    idx = np.stack([rng.integers(0, k, n) for k in obj.sizes], 1)
    return float(np.quantile(obj.true_reward(idx, alpha), 0.99))


def uniform_policy_draws() -> None:
    """Ablation: the controller's draws replaced by uniform ones (PPO still trains, unused),
    so the screening picks from uniform proposals: what the predictor does on its own."""
    import torch

    from faceclean.search.controller import Controller

    def sample(self, batch, generator=None):
        tokens = [torch.randint(0, n, (batch,), generator=generator) for n in self.sizes]
        logp = torch.tensor([[-math.log(n) for n in self.sizes]] * batch)
        return torch.stack(tokens, 1), logp

    Controller.sample = sample


def run_one(task: tuple) -> dict:
    """One (objective, seed, method) search; per-trial noisy and true rewards."""
    name, seed, method, budget, settings = task
    if settings.get("uniform_proposals"):
        uniform_policy_draws()
    space = load_space()
    obj = make_objective(name, space, seed)
    batch = settings["batch"]
    keys = ("controller_lr", "ppo_epochs", "entropy", "warmup_trials", "proposals")
    ppo = {k: settings[k] for k in keys}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        r = search(
            space,
            obj,
            Path(tmp),
            steps=-(-budget // batch),
            batch=batch,
            method=method,
            seed=seed,
            alpha=settings["alpha"],
            target_macs=1.0,
            ppo_options=settings.get("ppo_options"),
            explore=settings.get("explore", 0.0) if method == "ppo" else 0.0,
            mutate=settings.get("mutate", 0.0) if method == "ppo" else 0.0,
            **ppo,
        )
        wall = time.perf_counter() - t0
    alpha = settings["alpha"]
    idx = np.asarray([[space.choices[t].index(x[t]) for t in TOKENS] for x in r.trials])
    return {
        "objective": name,
        "seed": seed,
        "method": method,
        "reward": [x["reward"] for x in r.trials],
        "true_reward": obj.true_reward(idx, alpha).tolist(),
        "true_acc": [x["true_acc"] for x in r.trials],
        "entropy": r.entropy,
        "wall_s": wall,
    }


def run_all(fn, tasks: list, jobs: int) -> list:
    """``fn`` on every task, in ``jobs`` spawned processes when > 1 (in order)."""
    if jobs > 1:
        with get_context("spawn").Pool(jobs) as pool:
            return pool.map(fn, tasks, chunksize=1)
    return [fn(t) for t in tasks]


def summarise(runs: list[dict], thresholds: dict, budgets: list[int]) -> list[str]:
    lines = []
    q = lambda v: f"{np.median(v):.4f} [{np.quantile(v, 0.25):.4f}, {np.quantile(v, 0.75):.4f}]"  # noqa: E731
    for name in dict.fromkeys(r["objective"] for r in runs):
        lines.append(f"\n== {name} ==")
        for budget in budgets:
            lines.append(
                f"  budget {budget}: method    best true reward median [IQR]     "
                "to top 1% median (reached)  MA rise median [IQR]"
                + ("   narrow optimum found" if hasattr(OBJECTIVES.get(name), "found") else "")
            )
            for method in dict.fromkeys(r["method"] for r in runs):
                sel = [r for r in runs if r["objective"] == name and r["method"] == method]
                best = [max(r["true_reward"][:budget]) for r in sel]
                hits = []
                for r in sel:
                    thr = thresholds[(name, r["seed"])]
                    hit = next(
                        (i + 1 for i, v in enumerate(r["true_reward"][:budget]) if v >= thr), None
                    )
                    hits.append(hit)
                reached = [h for h in hits if h is not None]
                to_top = np.median([h if h else budget + 1 for h in hits])
                rise = [
                    np.mean(r["reward"][budget - 50 : budget]) - np.mean(r["reward"][:50])
                    for r in sel
                ]
                line = (
                    f"             {method:<8} {q(best):<34} "
                    f"{to_top:>6.0f} ({len(reached):>2}/{len(sel)})          {q(rise)}"
                )
                if hasattr(OBJECTIVES.get(name), "found"):
                    found_in = OBJECTIVES[name].found
                    found = sum(any(found_in(a) for a in r["true_acc"][:budget]) for r in sel)
                    line += f"   {found}/{len(sel)}"
                lines.append(line)
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--budgets", default="100,200,400")
    ap.add_argument("--methods", default="ppo,random,tpe,gaussian")
    ap.add_argument("--objectives", default="coupled,rugged,deceptive,needle")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--json", type=Path)
    ap.add_argument(
        "--ppo-options",
        type=json.loads,
        default=None,
        help="JSON of PPO's other settings (target_kl, clip, ...): experiments",
    )
    keys = (
        "batch",
        "controller_lr",
        "ppo_epochs",
        "entropy",
        "warmup_trials",
        "proposals",
        "alpha",
    )
    for key in keys:
        ap.add_argument(
            "--" + key.replace("_", "-"), type=type(DEFAULTS[key]), default=DEFAULTS[key]
        )
    ap.add_argument(
        "--explore",
        type=float,
        default=0.0,
        help="PPO's share of each batch drawn uniformly (search(..., explore=X))",
    )
    ap.add_argument(
        "--mutate",
        type=float,
        default=0.0,
        help="PPO's share of each batch mutated from the best so far (search(..., mutate=X))",
    )
    ap.add_argument(
        "--uniform-proposals",
        action="store_true",
        help="ablation: PPO's proposals drawn uniformly, not from the policy",
    )
    args = ap.parse_args()
    budgets = sorted(int(b) for b in args.budgets.split(","))
    settings = {k: getattr(args, k) for k in keys}
    if args.ppo_options:
        settings["ppo_options"] = args.ppo_options
    if args.uniform_proposals:
        settings["uniform_proposals"] = True
    if args.explore:
        settings["explore"] = args.explore
    if args.mutate:
        settings["mutate"] = args.mutate
    space = load_space()
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    names = args.objectives.split(",")
    thresholds = {
        (n, s): top1_threshold(make_objective(n, space, s), args.alpha)
        for n in names
        for s in seeds
    }
    tasks = [
        (n, s, m, budgets[-1], settings)
        for n in names
        for s in seeds
        for m in args.methods.split(",")
    ]
    t0 = time.perf_counter()
    runs = run_all(run_one, tasks, args.jobs)
    print(
        f"settings {json.dumps(settings)}; {args.seeds} seeds; budgets {budgets}; "
        f"{time.perf_counter() - t0:.0f} s"
    )
    for method in args.methods.split(","):
        walls = [r["wall_s"] / len(r["reward"]) for r in runs if r["method"] == method]
        print(f"  {method}: {np.mean(walls) * 1e3:.1f} ms per trial (sampler + bookkeeping)")
    print("\n".join(summarise(runs, thresholds, budgets)))
    if args.json:
        args.json.write_text(json.dumps({"settings": settings, "runs": runs}))


if __name__ == "__main__":
    main()
