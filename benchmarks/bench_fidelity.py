"""Multi-fidelity search against single-fidelity search, on the objectives of
search_objectives.py where a short trial (budget b) is noisier (NOISE / sqrt(b)) and biased
towards small models and easy losses (SHORT_BIAS).

Each arm runs `faceclean.search.search` as the CLI does (its defaults: batch 8, alpha,
controller settings; TPE batched), per objective and seed (each seed a different
instance). Arms (``--arms``; cost = summed budgets, in full trials):

    ppo-400        PPO, every trial at full budget, 400 trials (cost 400)
    ppo-100        PPO, full budget, 100 trials
    random-100     uniform search, full budget, 100 trials
    ppo-mf         PPO proposing the rung-0 combinations of successive halving
                   (eta 3, 3 rungs: budgets 1/9, 1/3, 1), stopped at cost --cost (100)
    random-mf      the same successive halving with uniform rung-0 draws
    tpe-mf         the same with TPE's rung-0 draws

Scored by the best true (noiseless, full-fidelity) reward among the trials run at full
budget, the ones a user can trust: median [IQR] over seeds, and the share of seeds where
the arm's best is >= ppo-400's best of the same seed.

    nice -n 10 python benchmarks/bench_fidelity.py [--seeds 20] [--jobs 2]
        [--objectives coupled,rugged,deceptive,needle] [--arms ...] [--cost 100]
        [--explore 0.0] [--eta 3] [--rungs 3] [--debias] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one BLAS thread per process (see bench_search.py)

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_search import make_objective, run_all  # noqa: E402

from faceclean.search.face_search import DEFAULTS, search  # noqa: E402
from faceclean.search.space import TOKENS, load_space  # noqa: E402

ARMS = {  # name: (method, fidelity, trials or None, uses --cost)
    "ppo-400": ("ppo", False, 400),
    "ppo-100": ("ppo", False, 100),
    "random-100": ("random", False, 100),
    "ppo-mf": ("ppo", True, None),
    "random-mf": ("random", True, None),
    "tpe-mf": ("tpe", True, None),
}


def run_arm(task: tuple) -> dict:
    """One (objective, seed, arm) search: the best true reward at full budget, and cost."""
    name, seed, arm, cost, explore, mf = task
    method, fidelity, trials = ARMS[arm]
    space = load_space()
    obj = make_objective(name, space, seed)
    batch = DEFAULTS["batch"]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        r = search(
            space,
            obj,
            Path(tmp),
            steps=10_000 if fidelity else -(-trials // batch),
            batch=batch,
            method=method,
            seed=seed,
            fidelity=fidelity,
            max_cost=cost if fidelity else None,
            explore=explore if method == "ppo" else 0.0,
            **(mf if fidelity else {}),
        )
        wall = time.perf_counter() - t0
    full = [x for x in r.trials if x.get("budget", 1.0) == 1.0]
    idx = np.asarray([[space.choices[t].index(x[t]) for t in TOKENS] for x in full])
    true = obj.true_reward(idx, DEFAULTS["alpha"])
    return {
        "objective": name,
        "seed": seed,
        "arm": arm,
        "best": float(true.max()),
        "cost": float(sum(x.get("budget", 1.0) for x in r.trials)),
        "trials": len(r.trials),
        "full_trials": len(full),
        "wall_s": wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--objectives", default="coupled,rugged,deceptive,needle")
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--cost", type=float, default=100.0)
    ap.add_argument("--explore", type=float, default=0.0, help="PPO's uniform share")
    ap.add_argument("--eta", type=int, default=3, help="successive halving's reduction")
    ap.add_argument("--rungs", type=int, default=3, help="successive halving's rungs")
    ap.add_argument(
        "--debias", action="store_true", help="search(..., debias=True): the -mf arms "
        "correct short rewards with a bias model learnt from the promotions"
    )  # fmt: skip
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--json", type=Path)
    ap.add_argument(
        "--reference",
        type=Path,
        help="bench_search.py --json output: its PPO runs (same seeds, objectives and "
        "--explore) stand in for the ppo-400 arm instead of running it again",
    )
    args = ap.parse_args()
    arms = args.arms.split(",")
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    mf = {"eta": args.eta, "rungs": args.rungs, "debias": args.debias}
    tasks = [
        (n, s, a, args.cost, args.explore, mf)
        for n in args.objectives.split(",")
        for s in seeds
        for a in arms
    ]
    t0 = time.perf_counter()
    runs = run_all(run_arm, tasks, args.jobs)
    if args.reference:
        ref = json.loads(args.reference.read_text())
        wanted = {(t[0], t[1]) for t in tasks}
        for r in ref["runs"]:
            if r["method"] == "ppo" and (r["objective"], r["seed"]) in wanted:
                best = max(r["true_reward"][:400])
                key = {"objective": r["objective"], "seed": r["seed"], "arm": "ppo-400"}
                runs.append(key | {"best": best, "cost": 400.0, "trials": 400, "full_trials": 400})
        arms = ["ppo-400", *[a for a in arms if a != "ppo-400"]]
    print(
        f"{args.seeds} seeds, cost {args.cost:g} for the -mf arms, PPO explore "
        f"{args.explore:g}, successive halving {mf}; {time.perf_counter() - t0:.0f} s "
        "(nice, shared 2-core machine)"
    )
    for name in args.objectives.split(","):
        print(f"\n== {name} ==   arm          best true reward at full budget, median [IQR]"
              "   >= ppo-400 (same seed)   cost   trials (full)")  # fmt: skip
        ref = {
            r["seed"]: r["best"] for r in runs if r["objective"] == name and r["arm"] == "ppo-400"
        }
        for arm in arms:
            sel = [r for r in runs if r["objective"] == name and r["arm"] == arm]
            if not sel:
                continue
            best = np.array([r["best"] for r in sel])
            q1, med, q3 = np.quantile(best, [0.25, 0.5, 0.75])
            paired = [r for r in sel if r["seed"] in ref]
            wins = sum(r["best"] >= ref[r["seed"]] for r in paired)
            versus = f"{wins:>2}/{len(paired)}" if paired else "    -"
            print(
                f"               {arm:<12} {med:.4f} [{q1:.4f}, {q3:.4f}]"
                f"                      {versus}"
                f"          {np.mean([r['cost'] for r in sel]):5.0f}  "
                f"{np.mean([r['trials'] for r in sel]):4.0f} "
                f"({np.mean([r['full_trials'] for r in sel]):.0f})"
            )
    if args.json:
        given = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        args.json.write_text(json.dumps({"args": given, "runs": runs}))


if __name__ == "__main__":
    main()
