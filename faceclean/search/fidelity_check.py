"""The fidelity check: do cheap trials rank combinations the way richer ones do?

A sample of combinations (drawn uniformly from the space with the seed) is trained at each
budget of ``budgets`` (shares of a full trial: the CLI maps a budget to a share of
``--max-steps``). For every cheaper budget, the Spearman rank correlation of its ACCs with
the richest budget's, with a percentile bootstrap interval over the combinations, and
whether its ranking holds: rho >= ``min_corr`` and the interval's lower end > 0. The
cheapest budget whose ranking holds is the fidelity to search at (``fidelity=True`` uses
budgets down to it). ACC, not the reward, is ranked: the reward's MACs factor is the same
at every budget and would inflate the correlation.

Results go to ``fidelity.json`` (rewritten atomically after every trial), so a killed
check continues where it stopped and a finished one is read back, not re-run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from faceclean.data.store import atomic_path
from faceclean.search.methods import run_trial, uniform_novel
from faceclean.search.space import SearchSpace

SEED_OFFSET = 800_000  # below the signal check's, far above any search trial's
HEAD = "embedding-head"  # the named level of faceclean.search.embedding_trial


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of ``x`` (ties share their mean rank)."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    for v in np.unique(x):
        same = x == v
        ranks[same] = ranks[same].mean()
    return ranks


def spearman(a, b) -> float:
    """Spearman's rank correlation of two samples; nan when either is constant."""
    ra, rb = average_ranks(a), average_ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def bootstrap_interval(a, b, n: int = 2000, level: float = 0.9, seed: int = 0):
    """Percentile bootstrap interval (``level``) of Spearman's rho over resampled pairs
    (resamples with a constant side are skipped); (nan, nan) when none is usable."""
    a, b = np.asarray(a), np.asarray(b)
    rng = np.random.default_rng(seed)
    rhos = [spearman(a[i], b[i]) for i in rng.integers(0, len(a), (n, len(a)))]
    rhos = np.asarray([r for r in rhos if math.isfinite(r)])
    if not len(rhos):
        return math.nan, math.nan
    tail = (1 - level) / 2
    return float(np.quantile(rhos, tail)), float(np.quantile(rhos, 1 - tail))


def assess_fidelity(accs: dict, min_corr: float, seed: int = 0) -> dict:
    """{"levels": [{budget, rho, interval, holds}] for each cheaper level, "cheapest" (the
    cheapest level whose ranking holds; the richest when none does)} from the ACCs per
    level (same combinations, same order). A level is a budget (float) or a named level
    (str, e.g. "embedding-head"), which counts as cheaper than every budget."""
    budgets = sorted(b for b in accs if not isinstance(b, str))
    richest = budgets[-1]
    levels = []
    for budget in [b for b in accs if isinstance(b, str)] + budgets[:-1]:
        rho = spearman(accs[budget], accs[richest])
        lo, hi = bootstrap_interval(accs[budget], accs[richest], seed=seed)
        holds = math.isfinite(rho) and rho >= min_corr and lo > 0
        levels.append({"budget": budget, "rho": rho, "interval": [lo, hi], "holds": holds})
    cheapest = next((lv["budget"] for lv in levels if lv["holds"]), richest)
    return {"richest": richest, "levels": levels, "cheapest": cheapest, "min_corr": min_corr}


def check_fidelity(
    space: SearchSpace,
    trial_fn: Callable,
    out_dir: str | Path,
    budgets: tuple[float, ...] = (1 / 9, 1 / 3, 1.0),
    combos: int = 8,
    seed: int = 0,
    min_corr: float = 0.6,
    on_trial: Callable[[dict], None] | None = None,
    named: dict[str, Callable] | None = None,
) -> dict:
    """Train ``combos`` uniformly drawn combinations at every budget with
    ``trial_fn(combo, seed, budget=b)``, and at each ``named`` level (name -> a trial
    function of its own, e.g. the embedding head's, called ``(combo, seed)``), and assess
    (see the module docstring; a named level is ranked against the richest budget). Returns
    {"trials", "levels", "cheapest", "richest", "min_corr", "failed"}; a failed trial leaves
    its combination out of the correlations (and is counted in "failed")."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "fidelity.json"
    named = dict(named or {})
    settings = {"budgets": list(budgets), "combos": combos, "seed": seed}
    if named:  # a check without named levels reads back as before
        settings["named"] = {k: repr(v) for k, v in named.items()}
    state = json.loads(path.read_text()) if path.exists() else {}
    if state.get("settings") != settings:
        state = {"settings": settings, "trials": []}
    rng = np.random.default_rng(seed)
    tokens = uniform_novel(space.sizes, combos, set(), rng)
    done = {(t["combo"], t["budget"]) for t in state["trials"]}
    for c, row in enumerate(tokens.tolist()):
        combo = space.decode(row)
        for j, budget in enumerate([*budgets, *named]):
            if (c, budget) in done:
                continue
            s = seed * 1_000_003 + SEED_OFFSET + 10 * c + j
            if isinstance(budget, str):
                out = run_trial(named[budget], combo, s)
            else:
                out = run_trial(trial_fn, combo, s, budget)
            record = {"combo": c, "budget": budget, "tokens": row, "seed": s, **combo, **out}
            state["trials"].append(record)
            with atomic_path(path) as tmp:
                tmp.write_text(json.dumps(state, indent=1))
            if on_trial:
                on_trial(record)
    failed = {t["combo"] for t in state["trials"] if t["error"] is not None}
    keep = [c for c in range(combos) if c not in failed]
    accs = {
        b: [next(t["acc"] for t in state["trials"] if t["combo"] == c and t["budget"] == b)
            for c in keep]
        for b in [*budgets, *named]
    }  # fmt: skip
    verdict = assess_fidelity(accs, min_corr, seed) if len(keep) >= 3 else {
        "richest": max(budgets), "levels": [], "cheapest": max(budgets), "min_corr": min_corr
    }  # fmt: skip
    state |= verdict | {"failed": len(failed)}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(state, indent=1))
    return state


def run_fidelity_check(
    embeddings,
    val,
    output,
    *,
    data_root=None,
    aspects: str = "all",
    space_file=None,
    train_kwargs: dict | None = None,
    fars=(1e-3, 1e-4, 1e-5),
    trial_identities: int | None = None,
    combos: int = 8,
    seed: int = 0,
    min_corr: float = 0.6,
    console=None,
    head: dict | None = None,
) -> dict:
    """The CLI's ``faceclean search --check-fidelity``: real trials (FaceTrial) at 1/9, 1/3
    and all of ``train_kwargs["max_steps"]``, in ``output/fidelity/`` (apart from a search's
    files, so a search into ``output`` can follow), and a table on ``console``. ``head``
    (keyword arguments of :class:`EmbeddingHeadTrial`, ``val_store`` among them) adds the
    embedding-head level, ranked against the full level like the others."""
    from faceclean.errors import FacecleanError
    from faceclean.outputs import output_lock
    from faceclean.search.space import load_space
    from faceclean.search.trial import FaceTrial, budget_steps

    kwargs = dict(train_kwargs or {})
    if not kwargs.get("max_steps"):
        raise FacecleanError("--check-fidelity scales --max-steps per level: give it")
    for name, path in (("embeddings", embeddings), ("validation set", val)):
        if not Path(path).exists():
            raise FacecleanError(f"{name} not found", path)
    space = load_space(space_file, aspects)
    work = Path(output) / "fidelity"
    work.parent.mkdir(parents=True, exist_ok=True)
    trial = FaceTrial(
        str(embeddings), str(val), str(work), str(data_root) if data_root else None,
        kwargs, tuple(fars), identities=trial_identities, subset_seed=seed,
    )  # fmt: skip

    named = {}
    if head:
        from faceclean.search.embedding_trial import EmbeddingHeadTrial

        if not Path(head["val_store"]).exists():
            raise FacecleanError("validation store not found", head["val_store"])
        named[HEAD] = EmbeddingHeadTrial(
            str(embeddings), work_dir=str(work), fars=tuple(fars),
            identities=trial_identities, subset_seed=seed, **head,
        )  # fmt: skip

    def level(budget) -> str:
        """A level as shown: "N steps", or a named level's name."""
        if isinstance(budget, str):
            return budget
        return f"{budget_steps(kwargs['max_steps'], budget)} steps"

    def show(record):
        if console:
            steps = level(record["budget"])
            what = f"ACC {record['acc']:.4f}" if record["error"] is None else record["error"]
            console.print(f"combination {record['combo'] + 1}/{combos}, {steps}: {what}")

    with output_lock(work):
        result = check_fidelity(space, trial, work, combos=combos, seed=seed,
                                min_corr=min_corr, on_trial=show, named=named)  # fmt: skip
    if console:
        from rich.table import Table

        title = (
            f"fidelity check: Spearman rho with {kwargs['max_steps']} steps "
            f"({combos - result['failed']} combinations, 90% bootstrap interval)"
        )
        table = Table(title=title)
        for col in ("level", "rho", "interval", f"holds (rho >= {min_corr:g}, low > 0)"):
            table.add_column(col)
        for lv in result["levels"]:
            lo, hi = lv["interval"]
            table.add_row(
                level(lv["budget"]),
                f"{lv['rho']:.2f}", f"[{lo:.2f}, {hi:.2f}]", "yes" if lv["holds"] else "no",
            )  # fmt: skip
        console.print(table)
        cheapest = result["cheapest"]
        what = level(cheapest) + ("" if isinstance(cheapest, str) else f" (budget {cheapest:.3g})")
        console.print(
            f"cheapest fidelity whose ranking holds: {what}; results in {work / 'fidelity.json'}"
        )
    return result
