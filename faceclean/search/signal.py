"""The signal check a search runs before it spends anything: do its trials measure more
than noise and chance?

The baseline combination (each token's choice nearest :data:`BASELINE`) and the space's
centre (each token's middle choice) are trained at ``seeds`` seeds each (>= 2; 3 by
default in the CLI). From their ACCs:

- sigma, the trial noise: the pooled within-combination standard deviation of ACC (ACC
  units; degrees of freedom = trials - combinations);
- chance, the ACC a model that scores pairs at random gets on this validation set: TAR =
  FAR at each resolvable FAR, weighted as ACC is (the trial reports it as ``chance_acc``;
  0 when it does not);
- the margin, the best combination's mean ACC minus chance.

The check passes when the margin is at least ``min_margin`` (ACC points) and at least
``min_snr`` sigma: below that, the ranking of combinations by a trial's ACC is the ranking
of noise. A failed check stops the search with one line saying what to change, unless
forced. The result is written to ``signal.json`` in the run folder and read back on a
resume (or on a re-run with the same inputs, so a forced re-run does not train the check's
trials again).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from faceclean.data.store import atomic_path
from faceclean.search.methods import run_trial
from faceclean.search.space import AUTO, BASELINE, TOKENS, SearchSpace

# The check's trial seeds sit far above any search trial's (seed * 1_000_003 + trial id),
# so a check trial never shares its seed with a search trial.
SEED_OFFSET = 900_000
MIN_MARGIN = 0.02
MIN_SNR = 5.0
ADVICE = (
    "train each trial longer (--max-steps/--epochs), on more identities "
    "(--trial-identities), or on larger inputs (--input-size), or pass --force to search anyway"
)


def check_combos(space: SearchSpace) -> dict[str, dict[str, float]]:
    """{"baseline": the choice nearest the baseline per token, "centre": the middle choice
    per token}; the centre is left out when it is the baseline."""
    baseline = {t: _nearest(space.choices[t], BASELINE[t]) for t in TOKENS}
    centre = {t: space.choices[t][(len(space.choices[t]) - 1) // 2] for t in TOKENS}
    return {"baseline": baseline} | ({} if centre == baseline else {"centre": centre})


def _nearest(choices: tuple, value: float) -> float | str:
    """The numeric choice nearest ``value``; ``"auto"`` only when it is the only choice
    (the baseline does no cleaning; auto is no number near it)."""
    numbers = [v for v in choices if v != AUTO]
    return min(numbers, key=lambda v: abs(v - value)) if numbers else AUTO


def pooled_sigma(groups: list[list[float]]) -> float:
    """Pooled within-group standard deviation (ddof 1 per group); nan without 2 values in
    any group."""
    ss = sum(float(((np.asarray(g) - np.mean(g)) ** 2).sum()) for g in groups if len(g) > 1)
    dof = sum(len(g) - 1 for g in groups if len(g) > 1)
    return math.sqrt(ss / dof) if dof else math.nan


def assess(
    accs: dict[str, list[float]],
    chance: float,
    seeds: int,
    min_margin: float = MIN_MARGIN,
    min_snr: float = MIN_SNR,
) -> dict:
    """The check's verdict from the ACCs per combination name: {"sigma", "chance",
    "mean_acc" {name: mean}, "margin", "passed", "message" (one line)}."""
    sigma = pooled_sigma(list(accs.values()))
    means = {k: float(np.mean(v)) for k, v in accs.items()}
    margin = max(means.values()) - chance
    shown = ", ".join(f"{k} {m:.4f}" for k, m in means.items())
    head = f"{seeds} seeds: ACC {shown}, chance {chance:.4f}, trial noise sigma {sigma:.4f}"
    if not math.isfinite(sigma):
        passed, why = False, "too few check trials finished to measure the noise"
    elif margin < min_margin:
        passed = False
        why = f"ACC is {margin:.4f} above chance (< {min_margin}): "
        why += "the trials learn nothing measurable"
    elif margin < min_snr * sigma:
        passed = False
        why = (
            f"ACC is only {margin / sigma:.1f} sigma above chance (< {min_snr:g}): "
            "differences between combinations would be noise"
        )
    else:
        passed, why = True, f"ACC is {margin / max(sigma, 1e-12):.1f} sigma above chance"
    message = f"signal check ({head}): {why}" + ("" if passed else f"; {ADVICE}")
    return {
        "sigma": sigma,
        "chance": chance,
        "mean_acc": means,
        "margin": margin,
        "passed": passed,
        "message": message,
    }


def run_signal_check(
    space: SearchSpace,
    trial_fn: Callable,
    run_dir: str | Path,
    seeds: int,
    seed: int,
    fingerprints: dict | None = None,
    trial_kwargs: dict | None = None,
    min_margin: float = MIN_MARGIN,
    min_snr: float = MIN_SNR,
) -> dict:
    """Run (or read back from ``run_dir/signal.json``) the check: ``trial_fn(combo, s,
    **trial_kwargs)`` for each check combination and ``seeds`` seeds. Returns the verdict
    of :func:`assess` plus "trials" (combination name, seed, acc, error, the trial's own
    fields) and the settings that produced it. A check trial that fails makes the check
    fail, naming the error."""
    path = Path(run_dir) / "signal.json"
    # The trial function's identity (a FaceTrial's repr holds its training settings), so a
    # re-run with other trial settings runs the check again.
    trial_id = getattr(trial_fn, "__qualname__", None) or repr(trial_fn)
    settings = {
        "seeds": seeds,
        "seed": seed,
        "fingerprints": dict(fingerprints or {}),
        "trial": trial_id,
        "trial_kwargs": dict(trial_kwargs or {}),
    }
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("settings") == settings:
            return old
    trials = []
    for c, (name, combo) in enumerate(check_combos(space).items()):
        for k in range(seeds):
            s = seed * 1_000_003 + SEED_OFFSET + 1000 * c + k  # a trial's run is named by it
            out = run_trial(lambda c, s: trial_fn(c, s, **(trial_kwargs or {})), combo, s)
            trials.append({"combo": name, "seed": s, **combo, **out})
    failed = [t for t in trials if t["error"] is not None]
    accs: dict[str, list[float]] = {}
    for t in trials:
        if t["error"] is None:
            accs.setdefault(t["combo"], []).append(float(t["acc"]))
    chance = float(
        np.mean([t.get("chance_acc") or 0.0 for t in trials if t["error"] is None] or [0])
    )
    if failed or not accs:
        first = failed[0] if failed else {"combo": "-", "error": "no trial"}
        result = {
            "sigma": math.nan,
            "chance": chance,
            "mean_acc": {},
            "margin": math.nan,
            "passed": False,
            "message": f"signal check: the {first['combo']} trial failed: {first['error']}",
        }
    else:
        result = assess(accs, chance, seeds, min_margin, min_snr)
    result |= {"trials": trials, "settings": settings}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    return result


def ties(rewards: list[float], sigma: float | None) -> list[bool]:
    """Which rewards lie within 2 sigma of the best (a tie with it, not a preference);
    all False without a finite sigma."""
    if sigma is None or not math.isfinite(sigma) or not rewards:
        return [False] * len(rewards)
    best = max(rewards)
    return [best - r <= 2 * sigma for r in rewards]
