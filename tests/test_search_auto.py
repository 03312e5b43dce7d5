"""tau_intra "auto" as a choice of the search space (issue 20): the trial chooses the
threshold from its own data and the log records the value chosen."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import faceclean.search.trial as trial_module
from faceclean.cleaning.clean import clean, read_clean_summary
from faceclean.cleaning.noise import inject_noise
from faceclean.data.synthetic import clustered_embeddings, make_face_folder, write_embedding_store
from faceclean.errors import FacecleanError
from faceclean.search.face_search import read_log
from faceclean.search.signal import check_combos
from faceclean.search.space import BASELINE, TOKENS, difficulty, load_space
from faceclean.search.trial import FaceTrial

FIXED = {t: BASELINE[t] for t in TOKENS if t not in ("tau_intra", "tau_inter")}


def _noisy_store(tmp_path, train_dir=None):
    """16 identities x 8 samples with 20 % of the labels flipped: a noise component the
    mixture on D can find, so auto chooses something other than the D = 1 fallback."""
    x, y = clustered_embeddings(16, 8, 32, spread=0.5, seed=3)
    store = write_embedding_store(tmp_path / "clean.parquet", x, y)
    noisy = inject_noise(pq.read_table(store), 0.2, 0.0, 0.0, seed=1).table
    if train_dir is not None:  # rows named after the images a trial trains on
        paths = [str(p.relative_to(train_dir)) for p in sorted(train_dir.glob("*/*.png"))]
        noisy = noisy.set_column(0, "path", pa.array(paths))
    pq.write_table(noisy, tmp_path / "noisy.parquet")
    return tmp_path / "noisy.parquet"


def test_auto_is_a_tau_intra_choice_only_and_not_in_the_default_space(tmp_path):
    assert all(isinstance(v, float) for v in load_space().choices["tau_intra"])
    f = tmp_path / "space.toml"
    f.write_text('[tokens]\ntau_intra = [0.3, "auto"]\n')
    assert load_space(f).choices["tau_intra"] == (0.3, "auto")
    for text, message in [
        ('[tokens]\nm1 = ["auto"]\n', "m1.*non-numeric"),
        ('[tokens]\ntau_intra = ["auto", "auto"]\n', "more than once"),
        ('[tokens]\ntau_intra = ["Auto"]\n', "non-numeric choice \\(numbers or 'auto'\\)"),
    ]:
        f.write_text(text)
        with pytest.raises(FacecleanError, match=message):
            load_space(f)


def test_difficulty_and_the_signal_baseline_with_auto(tmp_path):
    combo = {**FIXED, "tau_intra": "auto", "tau_inter": 0.62}
    assert difficulty(combo, 0.8)[0] == pytest.approx(1 - 0.8 + 0.62)
    assert difficulty(combo)[0] is None  # a failed trial chose nothing
    f = tmp_path / "space.toml"
    f.write_text('[tokens]\ntau_intra = ["auto", 0.2, 0.3]\n')
    # The baseline cleans nothing (tau_intra 0): the nearest number, never auto.
    assert check_combos(load_space(f))["baseline"]["tau_intra"] == 0.2
    f.write_text('[tokens]\ntau_intra = ["auto"]\n')
    assert check_combos(load_space(f))["baseline"]["tau_intra"] == "auto"


def test_an_auto_trial_chooses_from_its_data_and_records_the_value(tmp_path, monkeypatch):
    store = _noisy_store(tmp_path)
    # Training is not what is tested here: a stub run, so the trial is its cleaning.
    monkeypatch.setattr(trial_module, "train", lambda cfg, run: {"steps": 1})
    scores = {"impostor_pairs": 1, "tar@far=0.001": 0.5, "resolved@far=0.001": True}
    monkeypatch.setattr(trial_module, "evaluate_run", lambda run, val, fars: scores)
    monkeypatch.setattr(
        trial_module, "build_backbone", lambda cfg: __import__("torch").nn.Linear(1, 1)
    )
    monkeypatch.setattr(trial_module, "count_macs", lambda model: 1)
    trial = FaceTrial(str(store), "val", str(tmp_path / "work"), "root", fars=(1e-3,))
    out = trial({**FIXED, "tau_intra": "auto", "tau_inter": 0.62}, seed=0)
    # The same cleaning as `faceclean clean --tau-intra auto` (floors auto) on this data.
    ref = clean(store, tmp_path / "ref", "auto", 0.62, min_cos_pos="auto", min_norm="auto")
    chosen = ref.summary["tau_intra"]
    assert isinstance(chosen, float) and 0.0 < chosen < 1.0  # the mixture's, not D = 1
    assert out["tau_intra_chosen"] == chosen
    assert "mixture" in out["tau_intra_reason"]
    assert read_clean_summary(tmp_path / "work" / "clean" / "auto_0.6200")["tau_intra"] == chosen
    # A number is applied as given (the paper's D), with no reason.
    fixed = trial({**FIXED, "tau_intra": 0.3, "tau_inter": 0.62}, seed=0)
    assert fixed["tau_intra_chosen"] == 0.3 and fixed["tau_intra_reason"] is None


def test_the_search_cli_accepts_and_logs_auto(tmp_path):
    from faceclean.cli import main

    train_dir = make_face_folder(tmp_path / "train", 16, 8, size=56, seed=0)
    val_dir = make_face_folder(tmp_path / "val", 6, 4, size=56, seed=5)
    store = _noisy_store(tmp_path, train_dir)
    space = tmp_path / "space.toml"
    tokens = "\n".join(f"{t} = [{v}]" for t, v in FIXED.items())
    space.write_text(f'[tokens]\ntau_intra = ["auto"]\ntau_inter = [0.62]\n{tokens}\n')
    args = ["search", str(store), "--val", str(val_dir), "--data", str(train_dir), "-o",
            str(tmp_path / "run"), "--space-file", str(space), "--method", "random", "--steps",
            "1", "--batch", "2", "--input-size", "56", "--embedding-size", "32", "--max-steps",
            "1", "--batch-size", "8", "--far", "0.01", "--signal-seeds", "0",
            "--retrain-top", "0"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    log = read_log(tmp_path / "run")
    assert len(log) == 2 and all(t["tau_intra"] == "auto" for t in log), log
    auto = log[0]
    summary = json.loads((tmp_path / "run" / "clean" / "auto_0.6200" / "summary.json").read_text())
    assert auto["error"] is None and auto["tau_intra_chosen"] == summary["tau_intra"]
    assert auto["data_difficulty"] == pytest.approx(1 - summary["tau_intra"] + 0.62)
    assert np.isfinite(auto["acc"])


def test_the_plots_show_auto_as_its_own_choice(tmp_path, monkeypatch):
    import faceclean.search.plots as plots

    trials = []
    for i, tau in enumerate([0.3, "auto", 0.1, "auto"]):
        row = {**FIXED, "tau_intra": tau, "tau_inter": 0.62, "trial": i, "step": i // 2}
        row.update(error=None, acc=0.5 + 0.1 * i, reward=0.5 + 0.1 * i, policy_entropy=1.0)
        row.update(data_difficulty=None if i == 3 else 0.5, loss_difficulty=0.1)
        trials.append(row)
    bars = []
    import matplotlib.axes

    real_bar = matplotlib.axes.Axes.bar

    def bar(self, labels, heights, *args, **kwargs):
        bars.append(list(labels))
        return real_bar(self, labels, heights, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "bar", bar)
    paths = plots.plot_search(trials, tmp_path)
    assert [p.name for p in paths] == ["accuracy.png", "tokens.png", "difficulty.png"]
    assert bars[0] == ["0.1", "0.3", "auto"]  # tau_intra: numbers in order, then auto
