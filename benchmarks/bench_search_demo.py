"""The paper's Table 1 shape on the demo data: the joint search (all tokens) against each
single-aspect search (data, loss, backbone; the other tokens at the baseline) and the
baseline itself (no cleaning, ArcFace s=64 m=0.5, W = D = 1), on the same trial budget;
the best combination of each is re-trained for longer and its ACC reported.

    python benchmarks/bench_search_demo.py [--dir bench-demo] [--steps 4] [--batch 2]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from table1 import ARMS, Table1

from faceclean.demo import DEMO_FARS, DEMO_TRIAL, run_demo
from faceclean.search.space import TOKENS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dir", type=Path, default=Path("bench-demo"))
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--retrain-epochs", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--warmup-trials",
        type=int,
        default=2,
        help="PPO's uniform start (the CLI's 16 would be the whole of a small budget)",
    )
    args = ap.parse_args()
    quiet = Console(quiet=True)
    if not (args.dir / "noisy.parquet").exists():
        run_demo(args.dir, 40, 12, args.seed, quiet, steps=1, batch=1)
    noisy, val, root = args.dir / "noisy.parquet", args.dir / "val", args.dir / "train"
    rows = []
    t1 = Table1(
        noisy,
        val,
        root,
        DEMO_FARS,
        args.steps,
        args.batch,
        args.retrain_epochs,
        args.warmup_trials,
    )
    retrain_kwargs = {**DEMO_TRIAL, "epochs": args.retrain_epochs, "max_steps": None}
    base = t1.baseline(args.dir / "table1" / "baseline", retrain_kwargs, args.seed, "baseline")
    rows.append(("baseline", 0, None, base))
    for aspects in ARMS:
        summary = t1.arm(args.dir / "table1" / aspects, aspects, DEMO_TRIAL, args.seed)
        best = summary["retrained"][0]
        rows.append(
            (
                aspects,
                summary["trials"],
                best["search_reward"],
                best["retrained_acc"],
                {t: best[t] for t in TOKENS},
            )
        )
    print(
        f"same budget: {args.steps} steps x {args.batch} trials per search; ACC = mean "
        f"TAR at FAR {DEMO_FARS} on 15 held-out identities; re-trained "
        f"{args.retrain_epochs} epochs"
    )
    for row in rows:
        print(
            f"  {row[0]:<9} trials {row[1]:>3}  search reward "
            f"{'-' if row[2] is None else f'{row[2]:.4f}'}  re-trained ACC {row[3]:.4f}"
            + (f"  {json.dumps(row[4])}" if len(row) > 4 else "")
        )


if __name__ == "__main__":
    main()
