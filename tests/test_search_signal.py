"""The signal check before a search: chance-level trials stop it with one line (``force``
goes on), noise is measured and shown, ACC leaves out the FARs the validation set cannot
resolve, and ties within 2 sigma are marked."""

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import one_error_line, tiny_store

from faceclean.cli import main
from faceclean.errors import FacecleanError
from faceclean.search import load_space, search
from faceclean.search.signal import assess, check_combos, pooled_sigma, ties
from faceclean.search.space import BASELINE, TOKENS
from faceclean.search.trial import resolved_acc

CHANCE = 0.0005  # 0.5·1e-3 + 0.25·1e-4 + 0.25·1e-5, roughly


class Counted:
    """A trial function returning ``level`` + a seed-drawn N(0, sd) ACC, counting calls."""

    def __init__(self, level: float, sd: float):
        self.level, self.sd, self.calls = level, sd, 0

    def __call__(self, combo, seed):
        self.calls += 1
        acc = self.level + float(np.random.default_rng(seed).normal(0, self.sd))
        return {"acc": acc, "macs": 1.0, "chance_acc": CHANCE}


def test_chance_level_trials_stop_the_search_and_force_goes_on(tmp_path):
    space = load_space()
    chance_trials = Counted(0.003, 0.001)  # the proxy search: ACC 0.002-0.004
    with pytest.raises(FacecleanError) as err:
        search(space, chance_trials, tmp_path / "a", steps=2, batch=2, signal_seeds=3)
    message = str(err.value)
    assert "\n" not in message and "learn nothing measurable" in message
    assert "--max-steps" in message and "--force" in message
    assert chance_trials.calls == 6  # baseline and centre at 3 seeds, nothing else
    assert not (tmp_path / "a" / "trials.jsonl").exists()
    verdict = json.loads((tmp_path / "a" / "signal.json").read_text())
    assert verdict["passed"] is False and len(verdict["trials"]) == 6
    forced = search(
        space, chance_trials, tmp_path / "a", steps=2, batch=2, signal_seeds=3, force=True
    )
    assert chance_trials.calls == 6 + 4  # the check was read back, not run again
    assert len(forced.trials) == 4 and forced.signal["sigma"] == verdict["sigma"]
    assert all(t["trial_sigma"] == verdict["sigma"] for t in forced.trials)  # in the log


def test_a_learning_trial_passes_and_its_noise_is_measured(tmp_path):
    seen = []
    result = search(
        load_space(),
        Counted(0.6, 0.01),
        tmp_path,
        steps=1,
        batch=2,
        signal_seeds=4,
        on_signal=seen.append,
    )
    assert result.signal["passed"] and seen == [result.signal]
    assert 0.003 < result.signal["sigma"] < 0.03  # sd 0.01, 6 degrees of freedom
    assert result.signal["chance"] == pytest.approx(CHANCE)


def test_the_check_is_off_by_default_and_refuses_one_seed(tmp_path):
    trials = Counted(0.003, 0.001)
    result = search(load_space(), trials, tmp_path / "a", steps=1, batch=2)
    assert trials.calls == 2 and result.signal is None
    # Resuming a search started without the check does not run (or fail) it now.
    kw = dict(steps=2, batch=2, resume=True, signal_seeds=3)
    resumed = search(load_space(), trials, tmp_path / "a", **kw)
    assert trials.calls == 4 and resumed.signal is None
    with pytest.raises(FacecleanError, match=">= 2 seeds"):
        search(load_space(), trials, tmp_path / "b", steps=1, batch=2, signal_seeds=1)


def test_noise_as_large_as_the_signal_fails_the_check():
    # ACC 0.1 above chance, but sigma 0.05: 2 sigma, not the 5 needed.
    accs = {"baseline": [0.05, 0.10, 0.15], "centre": [0.05, 0.10, 0.15]}
    verdict = assess(accs, 0.0, 3)
    assert verdict["sigma"] == pytest.approx(0.05)
    assert not verdict["passed"] and "2.0 sigma above chance" in verdict["message"]
    clear = assess({"baseline": [0.50, 0.51, 0.52]}, 0.0, 3)
    assert clear["passed"] and clear["sigma"] == pytest.approx(0.01)


def test_pooled_sigma_and_check_combos():
    assert pooled_sigma([[1.0, 3.0], [10.0, 10.0, 10.0]]) == pytest.approx(math.sqrt(2 / 3))
    assert math.isnan(pooled_sigma([[1.0], [2.0]]))
    combos = check_combos(load_space())
    assert set(combos) == {"baseline", "centre"}
    space = load_space()
    for t in TOKENS:  # the baseline snapped to the space's nearest choice
        nearest = min(abs(v - BASELINE[t]) for v in space.choices[t])
        assert abs(combos["baseline"][t] - BASELINE[t]) == nearest
    assert combos["baseline"]["tau_inter"] == 0.8  # 1.01 (never merge) is not a choice


def test_acc_leaves_out_unresolved_fars_and_renormalises():
    fars = (1e-3, 1e-4, 1e-5)
    acc, weights, chance = resolved_acc(fars, [0.9, 0.6, 0.0], [True, True, False])
    assert weights == pytest.approx({"0.001": 2 / 3, "0.0001": 1 / 3})
    assert acc == pytest.approx(2 / 3 * 0.9 + 1 / 3 * 0.6)  # not 0.5·0.9 + 0.25·0.6 + 0
    assert chance == pytest.approx(2 / 3 * 1e-3 + 1 / 3 * 1e-4)
    acc, weights, _ = resolved_acc(fars, [0.9, 0.6, 0.3], [True] * 3)
    assert acc == pytest.approx(0.5 * 0.9 + 0.25 * 0.6 + 0.25 * 0.3) and len(weights) == 3
    _, weights, _ = resolved_acc(fars, [0.1, 0.0, 0.0], [False] * 3)
    assert len(weights) == 3  # nothing resolvable: every FAR kept, as the weights say


def test_ties_within_two_sigma_of_the_best():
    assert ties([0.80, 0.79, 0.75], 0.01) == [True, True, False]
    assert ties([0.80, 0.79], None) == [False, False]


def _fake_trial(level):
    def call(self, combo, seed, run_name=None):
        acc = level + float(np.random.default_rng(seed).normal(0, 0.001))
        return {
            "acc": acc,
            "chance_acc": CHANCE,
            "acc_weights": {"0.001": 2 / 3, "0.0001": 1 / 3},
            "impostor_pairs": 4950,
            "macs": 1e6,
        }

    return call


def test_the_cli_stops_with_one_line_then_force_searches_without_rerunning(tmp_path, monkeypatch):
    import faceclean.search.trial

    monkeypatch.setattr(faceclean.search.trial.FaceTrial, "__call__", _fake_trial(0.003))
    tiny_store(tmp_path / "e.parquet")  # the trial is faked; search checks the store
    (tmp_path / "val").mkdir()
    out = tmp_path / "run"
    args = ["search", tmp_path / "e.parquet", "--val", tmp_path / "val", "-o", out,
            "--steps", "1", "--batch", "2"]  # fmt: skip
    args = [str(a) for a in args]
    result = CliRunner().invoke(main, args)
    line = one_error_line(result, "signal check (3 seeds", "learn nothing", "--force")
    assert "chance 0.0005" in line
    assert not (out / "trials.jsonl").exists()
    calls = []
    monkeypatch.setattr(faceclean.search.signal, "run_trial", lambda *a: calls.append(a))
    forced = CliRunner().invoke(main, [*args, "--force"])
    assert forced.exit_code == 0, forced.output
    assert not calls  # the check's verdict was reused, not trained again
    assert "trial noise σ" in forced.output or "=:" in forced.output
    assert "cannot resolve FAR 1e-05" in forced.output  # the renormalised weights, said once
    assert forced.output.count("cannot resolve FAR") == 1
    assert len(json.loads((out / "signal.json").read_text())["trials"]) == 6
