"""The embedding-head fidelity level: a small MLP on the extractor's embeddings with the
trial's cleaning and loss, scored on a validation store; in a search, in the fidelity
check and on the CLI."""

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from helpers import one_error_line

from faceclean.cli import main
from faceclean.data.synthetic import clustered_embeddings, write_embedding_store
from faceclean.errors import FacecleanError
from faceclean.search import load_space
from faceclean.search.embedding_trial import EmbeddingHeadTrial, head_layers
from faceclean.search.space import BASELINE

FARS = (1e-2, 1e-3)


def stores(tmp_path, flips=0.0, dim=32):
    """(training store with ``flips`` of its labels moved to a random other identity,
    validation store of other identities in the same embedding space)."""
    x, y = clustered_embeddings(12, 10, dim, spread=0.6, seed=1)
    rng = np.random.default_rng(3)
    flip = rng.random(len(y)) < flips
    y = np.where(flip, (y + rng.integers(1, 12, len(y))) % 12, y)
    vx, vy = clustered_embeddings(8, 6, dim, spread=0.6, seed=9)
    return (
        write_embedding_store(tmp_path / "train.parquet", x, y),
        write_embedding_store(tmp_path / "val.parquet", vx, vy),
    )


def trial(tmp_path, **kw):
    train, val = stores(tmp_path, kw.pop("flips", 0.0), kw.pop("dim", 32))
    return EmbeddingHeadTrial(str(train), str(val), str(tmp_path / "w"), FARS, steps=40, **kw)


def test_head_depth_and_width_follow_the_backbone_tokens():
    assert head_layers(1.0, 1.0, 256) == (2, 256)
    assert head_layers(0.78, 1.54, 256) == (3, 200)
    assert head_layers(1.05, 1.2, 100) == (2, 105)


def test_a_head_trial_is_deterministic_scores_like_a_real_trial_and_trains_its_budget(tmp_path):
    t = trial(tmp_path)
    a, b = t(dict(BASELINE), 5), t(dict(BASELINE), 5)
    assert a == b  # the same seed, the same trial
    assert t(dict(BASELINE), 6)["acc"] != a["acc"]
    assert set(a["acc_weights"]) == {"0.01", "0.001"}  # 48 faces: 1,020 impostor pairs
    assert a["chance_acc"] == pytest.approx(0.5 * 1e-2 + 0.5 * 1e-3)  # two FARs: equal weights
    assert a["acc"] > 0.5  # well-separated clusters: far above chance
    assert a["train_steps"] == 40 and a["clean_rows"] == 120 and a["clean_classes"] == 12
    assert t(dict(BASELINE), 5, budget=0.25)["train_steps"] == 10
    wide = t(dict(BASELINE, width=1.05, depth=1.54), 5)
    assert wide["macs"] > a["macs"] and wide["head_macs"] > a["head_macs"]


def test_the_trial_s_cleaning_decides_which_rows_the_head_trains_on(tmp_path):
    t = trial(tmp_path, flips=0.15)
    kept = t(dict(BASELINE, tau_intra=0.3, tau_inter=0.9), 0)
    everything = t(dict(BASELINE), 0)
    # tau_intra 0 drops only rows pointing away from their class; 0.3 the flipped ones too.
    assert kept["clean_rows"] < everything["clean_rows"] - 5 and everything["clean_rows"] <= 120
    x, y = t.training_rows(0.3, 0.9)
    assert len(x) == len(y) == kept["clean_rows"]
    # The rows are joined back by path: each kept row's embedding is its store row's.
    store = pq.read_table(t.embeddings)
    clean = pq.read_table(next((tmp_path / "w" / "clean").glob("0.3000_*")) / "clean.parquet")
    row = store["path"].to_pylist().index(clean["path"][3].as_py())
    assert np.allclose(x[3], np.asarray(store["embedding"][row].as_py()))


def test_a_validation_store_of_another_extractor_is_refused_naming_it(tmp_path):
    t = trial(tmp_path)
    vx, vy = clustered_embeddings(4, 4, 16, seed=2)
    t.val_store = str(write_embedding_store(tmp_path / "v16.parquet", vx, vy))
    with pytest.raises(FacecleanError, match="v16.parquet: .*dimension 16"):
        t(dict(BASELINE), 0)


def test_the_fidelity_check_ranks_a_named_level_against_the_full_budget(tmp_path):
    from test_search_fidelity import Levels

    from faceclean.search.fidelity_check import check_fidelity

    def like_full(combo, seed):
        return Levels()(combo, seed, 1.0)

    def noise(combo, seed):
        return {"acc": float(np.random.default_rng(seed).normal()), "macs": 1.0}

    named = {"good": like_full, "bad": noise}
    result = check_fidelity(load_space(), Levels(), tmp_path, combos=12, seed=4, named=named)
    by = {lv["budget"]: lv for lv in result["levels"]}
    assert by["good"]["holds"] and by["good"]["rho"] > 0.9
    assert not by["bad"]["holds"]
    assert result["cheapest"] == "good"  # a named level counts as the cheapest
    assert len(result["trials"]) == 12 * 5


def test_cli_search_with_embedding_head_trials(tmp_path):
    train, val = stores(tmp_path)
    out = tmp_path / "run"
    base = ["search", str(train), "-o", str(out), "--steps", "2", "--batch", "2",
            "--far", "0.01", "--far", "0.001", "--trial", "embedding-head"]  # fmt: skip
    one_error_line(CliRunner().invoke(main, base), "--val-store")
    one_error_line(CliRunner().invoke(main, base[:-2] + ["--val-store", str(val)]), "--val-store")
    args = [*base, "--val-store", str(val), "--head-steps", "20", "--signal-seeds", "2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    from faceclean.search import read_log

    log = read_log(out)
    assert len(log) == 4 and all(t["trial_kind"] == "embedding-head" for t in log)
    assert all(t["train_steps"] == 20 and t["error"] is None for t in log)
    assert "signal check (2 seeds" in result.output


def test_cli_check_fidelity_adds_the_embedding_head_level(tmp_path, monkeypatch):
    import faceclean.search.trial
    from faceclean.search.trial import budget_steps

    def fake(self, combo, seed, run_name=None, budget=None):
        acc = combo["tau_intra"] + 0.1 * combo["depth"] if budget > 0.2 else float(seed % 7)
        return {"acc": acc, "macs": 1.0, "train_steps": budget_steps(90, budget)}

    monkeypatch.setattr(faceclean.search.trial.FaceTrial, "__call__", fake)
    train, val = stores(tmp_path)
    (tmp_path / "val").mkdir()
    args = ["search", str(train), "--val", str(tmp_path / "val"), "-o", str(tmp_path / "run"),
            "--check-fidelity", "--fidelity-combos", "4", "--max-steps", "90",
            "--val-store", str(val), "--head-steps", "10", "--far", "0.01"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "embedding-head" in result.output and "10 steps" in result.output
    state = __import__("json").loads((tmp_path / "run/fidelity/fidelity.json").read_text())
    assert [lv["budget"] for lv in state["levels"]][0] == "embedding-head"
    assert sum(t["budget"] == "embedding-head" for t in state["trials"]) == 4
