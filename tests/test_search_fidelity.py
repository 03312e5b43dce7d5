"""Multi-fidelity search (successive halving with the sampler proposing), the cost cap and
PPO's exploration share, on cheap synthetic trial functions."""

import math

import numpy as np
import pytest

from faceclean.errors import FacecleanError
from faceclean.search import load_space, search
from faceclean.search.fidelity import Schedule, spent
from faceclean.search.surrogate import SurrogateObjective
from faceclean.search.trial import budget_steps


class Budgeted:
    """The surrogate objective observed at a budget: noise / sqrt(budget), and every call's
    budget recorded."""

    def __init__(self, seed=0):
        self.surrogate = SurrogateObjective(load_space(), seed=seed)
        self.budgets = []

    def __call__(self, combo, seed, budget):
        self.budgets.append(budget)
        out = self.surrogate(combo, seed)
        out["acc"] += float(np.random.default_rng(seed).normal(0, 0.01 / math.sqrt(budget)))
        return out


def test_schedule_rungs_budgets_and_promotions():
    sch = Schedule(batch=2, eta=3, rungs=3)
    assert [sch.budget(r) for r in range(3)] == pytest.approx([1 / 9, 1 / 3, 1])
    assert sch.bracket_steps == 13
    assert [sch.locate(s)[1] for s in range(14)] == [0] * 9 + [1] * 3 + [2, 0]
    assert sch.locate(13) == (1, 0, 0) and sch.fresh_steps_before(13) == 9
    done = {i: {"trial": i, "reward": float(i % 7)} for i in range(18)}  # rung 0 of bracket 0
    top6 = sorted(done.values(), key=lambda t: (-t["reward"], t["trial"]))[:6]
    promoted = [t["trial"] for s in (9, 10, 11) for t in sch.promoted(s, done)]
    assert promoted == [t["trial"] for t in top6]
    with pytest.raises(ValueError):
        sch.promoted(3, done)


def test_fidelity_search_passes_budgets_promotes_the_best_and_stops_at_max_cost(tmp_path):
    trial = Budgeted()
    r = search(
        load_space(), trial, tmp_path, steps=1000, batch=2, fidelity=True, max_cost=7,
        method="random", seed=3,
    )  # fmt: skip
    assert all(0 < b <= 1 for b in trial.budgets)
    assert sorted(set(trial.budgets)) == pytest.approx([1 / 9, 1 / 3, 1])
    cost = spent(r.trials)
    assert 7 <= cost < 7 + 2  # stops once the summed budgets reach 7 full trials
    by_id = {t["trial"]: t for t in r.trials}
    for t in r.trials:
        assert t["budget"] == pytest.approx(1 / 9 * 3 ** t["rung"])
        if t["rung"]:  # a promotion re-runs the previous rung's combination, longer
            parent = by_id[t["promoted_from"]]
            assert parent["rung"] == t["rung"] - 1 and parent["tokens"] == t["tokens"]
    rung0 = [t for t in r.trials if t["bracket"] == 0 and t["rung"] == 0]
    rung1 = [t for t in r.trials if t["bracket"] == 0 and t["rung"] == 1]
    cut = sorted(t["reward"] for t in rung0)[-len(rung1)]
    assert all(by_id[t["promoted_from"]]["reward"] >= cut for t in rung1)
    assert r.top(3) and all(t["budget"] == 1 for t in r.top(3))


@pytest.mark.parametrize("method", ["ppo", "tpe"])
def test_the_controller_proposes_rung_zero_and_a_resume_promotes_the_same(tmp_path, method):
    pytest.importorskip("optuna") if method == "tpe" else None
    kw = dict(batch=2, fidelity=True, method=method, seed=1, warmup_trials=4)
    full = search(load_space(), Budgeted(), tmp_path / "full", steps=14, **kw)
    search(load_space(), Budgeted(), tmp_path / "cut", steps=10, **kw)
    resumed = search(load_space(), Budgeted(), tmp_path / "cut", steps=14, resume=True, **kw)
    strip = lambda ts: [(t["trial"], t["tokens"], t["budget"], t["promoted_from"]) for t in ts]  # noqa: E731
    if method == "ppo":  # bit-identical; TPE's sampler state is not restored (documented)
        assert strip(resumed.trials) == strip(full.trials)
    assert [t["rung"] for t in full.trials] == [0] * 18 + [1] * 6 + [2] * 2 + [0] * 2
    if method == "ppo":  # after the warm-up, rung 0 comes from the policy (log-prob kept)
        fresh = [t for t in full.trials if t["rung"] == 0 and t["step"] >= 2]
        assert all(t["log_prob"] is not None for t in fresh)


def test_max_cost_without_fidelity_counts_trials_and_defaults_are_unchanged(tmp_path):
    calls = []

    def plain(combo, seed):  # no budget keyword: today's trial functions keep working
        calls.append(seed)
        return {"acc": 0.5, "macs": 1.0}

    r = search(load_space(), plain, tmp_path / "a", steps=100, batch=3, max_cost=7)
    assert len(r.trials) == 9 and "budget" not in r.trials[0]  # 3 steps: cost 9 >= 7
    with pytest.raises(FacecleanError, match="max_cost"):
        search(load_space(), plain, tmp_path / "b", steps=1, batch=2, max_cost=0)


def test_explore_share_is_uniform_unscreened_and_untried(tmp_path):
    space = load_space()
    uniform = sum(-math.log(n) for n in space.sizes)
    r = search(
        space, SurrogateObjective(space, seed=2), tmp_path, steps=6, batch=4,
        warmup_trials=4, explore=0.5, seed=5,
    )  # fmt: skip
    after = [t for t in r.trials if t["step"] >= 1]
    for step in range(1, 6):
        rows = [t for t in after if t["step"] == step]
        explored = [t for t in rows if t["log_prob"] == pytest.approx(uniform)]
        assert len(explored) >= 2  # 2 of 4 drawn uniformly (a policy draw may tie: never)
        if step >= 2:  # screened once 2 x 2 trials are in: the explored ones are not
            assert [t["predicted_reward"] is None for t in rows] == [False, False, True, True]
    assert len({tuple(t["tokens"]) for t in r.trials}) == len(r.trials)
    with pytest.raises(FacecleanError, match="explore"):
        search(space, SurrogateObjective(space), tmp_path / "x", steps=1, batch=2, explore=1.0)


def test_budget_maps_to_training_steps():
    assert budget_steps(90, 1 / 9) == 10 and budget_steps(90, 1.0) == 90
    assert budget_steps(5, 1 / 9) == 1  # never 0 steps
    with pytest.raises(FacecleanError, match="--max-steps"):
        budget_steps(None, 0.5)


class Levels:
    """ACC = a combination's own quality at full and 1/3 budget (plus a little noise), pure
    noise at 1/9: the 1/3 level ranks like full training, the 1/9 level does not."""

    def __init__(self):
        self.calls = 0

    def __call__(self, combo, seed, budget):
        self.calls += 1
        quality = combo["tau_intra"] + combo["m2"] + 0.1 * combo["depth"]
        noise = np.random.default_rng(seed).normal(0, 1)
        acc = noise if budget < 0.2 else quality + 0.01 * noise
        return {"acc": float(acc), "macs": 1.0}


def test_fidelity_check_finds_the_cheapest_level_that_ranks_like_the_full_one(tmp_path):
    from faceclean.search.fidelity_check import check_fidelity

    trial = Levels()
    result = check_fidelity(load_space(), trial, tmp_path, combos=12, seed=4)
    assert trial.calls == 36
    by_budget = {round(lv["budget"], 4): lv for lv in result["levels"]}
    assert not by_budget[0.1111]["holds"] and abs(by_budget[0.1111]["rho"]) < 0.6
    assert by_budget[0.3333]["holds"] and by_budget[0.3333]["rho"] > 0.9
    lo, hi = by_budget[0.3333]["interval"]
    assert 0 < lo <= by_budget[0.3333]["rho"] <= hi <= 1
    assert result["cheapest"] == pytest.approx(1 / 3)
    again = check_fidelity(load_space(), trial, tmp_path, combos=12, seed=4)
    assert trial.calls == 36 and again["cheapest"] == result["cheapest"]  # read back


def test_spearman_matches_scipy_with_ties():
    scipy_stats = pytest.importorskip("scipy.stats")
    from faceclean.search.fidelity_check import spearman

    a, b = [1, 2, 2, 5, 3, 9], [2, 1, 3, 3, 8, 7]
    assert spearman(a, b) == pytest.approx(scipy_stats.spearmanr(a, b).statistic)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_cli_check_fidelity_reports_rho_and_the_cheapest_level(tmp_path, monkeypatch):
    from click.testing import CliRunner
    from helpers import one_error_line, tiny_store

    import faceclean.search.trial
    from faceclean.cli import main

    def fake(self, combo, seed, run_name=None, budget=None):
        steps = budget_steps(self.train_kwargs["max_steps"], budget)
        return Levels()(combo, seed, budget) | {"train_steps": steps}

    monkeypatch.setattr(faceclean.search.trial.FaceTrial, "__call__", fake)
    tiny_store(tmp_path / "e.parquet")
    (tmp_path / "val").mkdir()
    base = ["search", str(tmp_path / "e.parquet"), "--val", str(tmp_path / "val"), "-o",
            str(tmp_path / "run"), "--check-fidelity", "--fidelity-combos", "10"]  # fmt: skip
    one_error_line(CliRunner().invoke(main, base), "--max-steps")
    result = CliRunner().invoke(main, [*base, "--max-steps", "90"])
    assert result.exit_code == 0, result.output
    assert "cheapest fidelity whose ranking holds: 30 steps" in result.output
    assert (tmp_path / "run" / "fidelity" / "fidelity.json").exists()
    assert not (tmp_path / "run" / "trials.jsonl").exists()  # a check, not a search


def test_a_face_trial_trains_its_budget_share_of_max_steps(tmp_path):
    from test_search_cli import _store

    from faceclean.search.space import BASELINE
    from faceclean.search.trial import FaceTrial

    store, val_dir, train_dir = _store(tmp_path)
    trial = FaceTrial(str(store), str(val_dir), str(tmp_path / "w"), str(train_dir),
                      {"max_steps": 9, "input_size": 56})  # fmt: skip
    combo = dict(BASELINE)
    assert trial.config(combo, 0, budget=1 / 3).max_steps == 3
    assert trial.config(combo, 0, budget=1 / 9).max_steps == 1
    assert trial.config(combo, 0).max_steps == 9  # no budget: today's trial


class ShortBiased:
    """Deterministic trials whose full-budget reward grows with depth while a short trial
    under-rates depth by (1 - b) * 2 u_depth: every short rung prefers shallow models."""

    def __init__(self):
        self.space = load_space()

    def __call__(self, combo, seed, budget):
        depths = self.space.choices["depth"]
        u = depths.index(combo["depth"]) / (len(depths) - 1)
        return {"acc": 1.0 + u - (1 - budget) * 2 * u, "macs": 1.0}


def test_bias_model_learns_the_short_trials_shortfall_from_promoted_pairs():
    from faceclean.search.fidelity import BiasModel

    space, trial, rng = load_space(), ShortBiased(), np.random.default_rng(0)
    done = {}
    for i in range(40):  # pairs (1/9 -> 1/3) of random combinations
        tokens = [int(rng.integers(0, n)) for n in space.sizes]
        for j, b in enumerate((1 / 9, 1 / 3)):
            r = trial(space.decode(tokens), 0, b)["acc"]
            done[2 * i + j] = {"trial": 2 * i + j, "tokens": tokens, "budget": b, "reward": r,
                               "promoted_from": 2 * i if j else None}  # fmt: skip
    model = BiasModel(space.sizes, l2=1e-3).fit(done)
    depth = 1 + list(space.choices).index("depth")
    assert model.w[depth] == pytest.approx(2.0, abs=0.05)
    short = [t for t in done.values() if t["budget"] < 0.2]
    fixed = model.correct(1 / 9, [t["tokens"] for t in short], [t["reward"] for t in short])
    full = [trial(space.decode(t["tokens"]), 0, 1.0)["acc"] for t in short]
    assert np.abs(fixed - full).max() < 0.02  # the full-budget reward, from a short trial
    est = model.estimates(done)
    assert sorted(est) == [t["trial"] for t in short]  # keyed by the rung-0 trial
    assert BiasModel(space.sizes).fit({}).w is None  # no pairs: no correction


def test_debias_promotes_what_full_training_prefers_not_what_short_training_does(tmp_path):
    depth = lambda ts: np.mean([t["depth"] for t in ts])  # noqa: E731
    runs = {}
    for debias in (False, True):
        runs[debias] = search(
            load_space(), ShortBiased(), tmp_path / str(debias), steps=26, batch=3,
            fidelity=True, method="random", seed=2, debias=debias,
        )  # fmt: skip
    late = {
        k: [t for t in r.trials if t["bracket"] == 1 and t["rung"] == 2] for k, r in runs.items()
    }
    # Without the model the short rungs promote shallow models; with it, deep ones.
    assert depth(late[True]) > depth(late[False]) + 0.1
    assert max(t["reward"] for t in late[True]) > max(t["reward"] for t in late[False])
    with pytest.raises(FacecleanError, match="fidelity"):
        search(load_space(), ShortBiased(), tmp_path / "x", steps=1, batch=2, debias=True)


def test_cli_debias_reaches_the_search_and_needs_fidelity(tmp_path, monkeypatch):
    from click.testing import CliRunner
    from helpers import one_error_line, tiny_store

    import faceclean.search.trial
    from faceclean.cli import main
    from faceclean.search.trial_log import read_log

    def fake(self, combo, seed, run_name=None, budget=None):
        steps = budget_steps(self.train_kwargs["max_steps"], budget)
        return ShortBiased()(combo, seed, budget) | {"train_steps": steps}

    monkeypatch.setattr(faceclean.search.trial.FaceTrial, "__call__", fake)
    tiny_store(tmp_path / "e.parquet")
    (tmp_path / "val").mkdir()
    base = ["search", str(tmp_path / "e.parquet"), "--val", str(tmp_path / "val"),
            "--max-steps", "9", "--signal-seeds", "0", "--method", "random", "--batch", "2",
            "--debias"]  # fmt: skip
    bad = CliRunner().invoke(main, [*base, "-o", str(tmp_path / "a")])
    one_error_line(bad, "fidelity")
    logs = {}
    for name, extra in (("plain", []), ("debias", ["--debias"])):
        args = [*base[:-1], *extra, "-o", str(tmp_path / name), "--fidelity", "--max-cost", "24"]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        logs[name] = read_log(tmp_path / name)
    assert {t["train_steps"] for t in logs["debias"]} == {1, 3, 9}
    # Same rung-0 draws (random search, same seed); from the second bracket on, the
    # promotions rank corrected rewards: deeper models than short training alone picks
    # (the fake under-rates depth at short budgets, see ShortBiased).
    depth = {
        k: np.mean([t["depth"] for t in log if t["bracket"] >= 1 and t["rung"] == 1])
        for k, log in logs.items()
    }
    assert depth["debias"] > depth["plain"]


def test_mutate_share_neighbours_the_best_and_default_is_unchanged(tmp_path):
    space = load_space()
    uniform = sum(-math.log(n) for n in space.sizes)
    obj = SurrogateObjective(space, seed=2)
    kw = dict(steps=5, batch=4, warmup_trials=4, explore=0.25, seed=5)
    r = search(space, obj, tmp_path / "m", mutate=0.25, **kw)
    for step in range(1, 5):
        earlier = [t for t in r.trials if t["step"] < step]
        best = max(earlier, key=lambda t: t["reward"])["tokens"]
        rows = [t for t in r.trials if t["step"] == step]
        assert rows[-1]["log_prob"] == pytest.approx(uniform)  # the explore share stays
        changed = sum(a != b for a, b in zip(rows[-2]["tokens"], best, strict=True))
        assert changed in (1, 2)  # the mutation: one or two tokens off the best so far
        assert rows[-2]["log_prob"] != pytest.approx(uniform)  # the policy's log-prob of it
    assert len({tuple(t["tokens"]) for t in r.trials}) == len(r.trials)
    plain = search(space, obj, tmp_path / "p", **kw).trials
    default = search(space, obj, tmp_path / "d", mutate=0.0, **kw).trials
    assert [t["tokens"] for t in plain] == [t["tokens"] for t in default]
    assert [t["tokens"] for t in plain] != [t["tokens"] for t in r.trials]
    with pytest.raises(FacecleanError, match="mutate"):
        search(space, obj, tmp_path / "x", steps=1, batch=2, explore=0.5, mutate=0.5)


def test_cli_mutate_reaches_the_search(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import faceclean.search.face_search
    from faceclean.cli import main

    seen = {}

    def fake_search(*args, **kwargs):
        seen.update(kwargs)
        raise FacecleanError("stopped by the test")

    monkeypatch.setattr(faceclean.search.face_search, "search", fake_search)
    from helpers import tiny_store

    tiny_store(tmp_path / "e.parquet")
    (tmp_path / "val").mkdir()
    base = ["search", str(tmp_path / "e.parquet"), "--val", str(tmp_path / "val"),
            "--signal-seeds", "0", "--explore", "0.5"]  # fmt: skip
    for extra, want in (([], 0.0), (["--mutate", "0.25"], 0.25)):
        seen.clear()
        out = CliRunner().invoke(main, [*base, *extra, "-o", str(tmp_path / str(want))])
        assert out.exit_code == 2 and "stopped by the test" in out.output, out.output
        assert seen["mutate"] == want and seen["explore"] == 0.5
