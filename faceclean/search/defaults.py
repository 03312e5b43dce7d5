"""The defaults of the search's Python API and of `faceclean search`, in a module that
imports nothing heavy, so that the CLI reads them here without `faceclean --help`
importing torch. Controller settings measured with benchmarks/bench_search.py (see
README)."""

from __future__ import annotations

METHODS = ("ppo", "random", "tpe", "gaussian")
DEFAULTS = {
    "steps": 50,
    "batch": 8,
    "method": "ppo",
    "seed": 0,
    "alpha": -0.07,
    "controller_lr": 1e-2,
    "ppo_epochs": 4,
    "entropy": 1e-2,
    "warmup_trials": 16,
    "proposals": 16,
}
