"""`faceclean search` and `demo` options: the CLI's defaults are the Python API's, numeric
options have ranges (one-line errors, nothing written), and a real search with two workers
and proxy trials runs end to end and records its proxy settings."""

import inspect
import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from faceclean.cli import main
from faceclean.search import search
from faceclean.search.defaults import DEFAULTS
from faceclean.search.face_search import read_log


def _cli_defaults(name):
    cmd = main.commands[name]
    return {p.name: p.default for p in cmd.params}


def test_the_cli_defaults_are_the_python_defaults():
    sig = inspect.signature(search).parameters
    cli = _cli_defaults("search")
    for key, value in DEFAULTS.items():
        assert sig[key].default == value, key
        assert cli[key] == value, key


def test_the_cli_reads_the_defaults_without_importing_torch():
    # Why the defaults live in faceclean.search.defaults and not in the engine.
    code = (
        "import sys; from click.testing import CliRunner; from faceclean.cli import main; "
        "r = CliRunner().invoke(main, ['search', '--help']); "
        "assert r.exit_code == 0, r.output; assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch", "0"], "--batch"),
        (["--steps", "-1"], "--steps"),
        (["--alpha", "nan"], "--alpha"),
        (["--alpha", "inf"], "--alpha"),
        (["--controller-lr", "0"], "--controller-lr"),
        (["--ppo-epochs", "0"], "--ppo-epochs"),
        (["--entropy", "-1"], "--entropy"),
        (["--warmup-trials", "-1"], "--warmup-trials"),
        (["--workers", "0"], "--workers"),
        (["--gpus-per-trial", "0"], "--gpus-per-trial"),
        (["--trial-identities", "1"], "--trial-identities"),
        (["--max-steps", "0"], "--max-steps"),
        (["--lr", "nan"], "--lr"),
        (["--far", "0"], "--far"),
    ],
)
def test_search_options_out_of_range_are_one_line_errors(tmp_path, args, message):
    out = tmp_path / "run"
    base = ["search", str(tmp_path / "e.parquet"), "--val", str(tmp_path), "-o", str(out)]
    result = CliRunner().invoke(main, base + args)
    assert result.exit_code == 2, result.output
    assert (
        "Traceback" not in result.output
        and result.exception is None
        or isinstance(result.exception, SystemExit)
    )
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error") and message in lines[0], lines
    assert not out.exists()


@pytest.mark.parametrize(
    "args", [["--identities", "1"], ["--images-per-identity", "0"], ["--batch", "0"]]
)
def test_demo_options_out_of_range_are_one_line_errors(tmp_path, args):
    out = tmp_path / "demo"
    result = CliRunner().invoke(main, ["demo", "-o", str(out), *args])
    assert result.exit_code == 2 and args[0] in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert not out.exists()


def test_missing_inputs_and_resume_with_overwrite_are_errors(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(
        main, ["search", str(tmp_path / "nope.parquet"), "--val", str(tmp_path), "-o", str(out)]
    )
    assert result.exit_code == 2 and "nope.parquet: embeddings not found" in result.output
    assert not out.exists()
    result = CliRunner().invoke(
        main,
        [
            "search",
            str(tmp_path),
            "--val",
            str(tmp_path),
            "-o",
            str(out),
            "--resume",
            "--overwrite",
        ],
    )
    assert result.exit_code == 2 and "exclude each other" in result.output


def _store(tmp_path, identities=8):
    from faceclean.data.synthetic import (
        clustered_embeddings,
        make_face_folder,
        write_embedding_store,
    )

    train_dir = make_face_folder(tmp_path / "train", identities, 6, size=56, seed=0)
    val_dir = make_face_folder(tmp_path / "val", 6, 4, size=56, seed=5)
    x, y = clustered_embeddings(identities, 6, 32, spread=0.5, seed=2)
    store = write_embedding_store(tmp_path / "e.parquet", x, y)
    t = pq.read_table(store)
    paths = [str(p.relative_to(train_dir)) for p in sorted(train_dir.glob("*/*.png"))]
    pq.write_table(t.set_column(0, "path", pa.array(paths)), store)
    return store, val_dir, train_dir


@pytest.mark.slow
def test_two_worker_proxy_search_end_to_end_then_overwrite(tmp_path):
    import torch

    torch.ones(256, 256) @ torch.ones(256, 256)  # torch's threads are up, as in a real CLI
    store, val_dir, train_dir = _store(tmp_path)
    out = tmp_path / "run"
    args = ["search", str(store), "--val", str(val_dir), "--data", str(train_dir), "-o",
            str(out), "--steps", "1", "--batch", "2", "--workers", "2", "--input-size", "56",
            "--embedding-size", "32", "--max-steps", "2", "--batch-size", "8", "--far", "0.01",
            "--trial-identities", "5", "--signal-seeds", "0"]  # fmt: skip
    result = CliRunner().invoke(main, [*args, "--json", str(tmp_path / "search.json")])
    assert result.exit_code == 0, result.output
    log = read_log(out)
    assert len(log) == 2 and all(t["error"] is None for t in log), log
    doc = json.loads((tmp_path / "search.json").read_text())
    assert doc["verb"] == "search" and doc["summary"], doc
    assert all(t["trial_identities"] == 5 and t["max_steps"] == 2 for t in log)
    assert all(t["train_steps"] == 2 for t in log)
    subsets = list((out / "clean").glob("*/subset5_seed0.parquet"))
    assert subsets and all(
        len(set(pq.read_table(p)["original_label"].to_pylist())) <= 5 for p in subsets
    )
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 2 and "--overwrite" in again.output
    assert read_log(out) == log  # the refused run touched nothing
    # Another validation set on resume is refused, naming what changed.
    other_val = tmp_path / "val2"
    other_val.mkdir()
    (other_val / "x").write_text("x")
    i = args.index("--val")
    resumed = CliRunner().invoke(main, args[: i + 1] + [str(other_val)] + args[i + 2 :] +
                                 ["--resume"])  # fmt: skip
    assert resumed.exit_code == 2 and "validation set differ" in resumed.output
    fresh = CliRunner().invoke(main, [*args, "--overwrite", "--seed", "1"])
    assert fresh.exit_code == 0, fresh.output
    assert [t["seed"] for t in read_log(out)] == [1_000_003, 1_000_004]


def test_the_demo_search_warms_up_for_one_step_only(tmp_path, tiny_model, monkeypatch):
    # With the search's default 16 warm-up trials a 3 x 2 demo would never update PPO.
    from rich.console import Console

    import faceclean.search.face_search
    from faceclean.demo import run_demo

    seen = {}
    monkeypatch.setattr(
        faceclean.search.face_search, "run_search", lambda *a, **kw: seen.update(kw) or {}
    )
    run_demo(tmp_path / "demo", 8, 6, 0, Console(quiet=True), tiny_model, steps=3, batch=2)
    assert seen["controller"]["warmup_trials"] == seen["batch"] == 2


def test_a_search_whose_every_trial_fails_exits_non_zero(tmp_path, monkeypatch):
    import faceclean.search.trial

    def broken(self, combo, seed, run_name=None):
        raise ValueError("Expected more than 1 value per channel")

    monkeypatch.setattr(faceclean.search.trial.FaceTrial, "__call__", broken)
    store, val_dir, train_dir = _store(tmp_path)
    out = tmp_path / "run"
    args = ["search", str(store), "--val", str(val_dir), "--data", str(train_dir), "-o",
            str(out), "--steps", "1", "--batch", "2", "--input-size", "56",
            "--signal-seeds", "0"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "every one of the 2 trials failed" in result.output
    assert "more than 1 value per channel" in result.output
    assert len(read_log(out)) == 2  # the log of what failed is kept for the user
    assert not (out / "accuracy.png").exists()


def test_search_batch_size_one_is_refused_before_any_trial(tmp_path):
    out = tmp_path / "run"
    base = ["search", str(tmp_path / "e.parquet"), "--val", str(tmp_path), "-o", str(out)]
    result = CliRunner().invoke(main, [*base, "--batch-size", "1"])
    assert result.exit_code == 2 and "--batch-size" in result.output
    assert not out.exists()


def test_ctrl_c_says_how_to_resume_and_exits_130(monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("faceclean.demo.run_demo", interrupted)
    result = CliRunner().invoke(main, ["demo", "-o", "x"])
    assert result.exit_code == 130, result.output
    assert "interrupted" in result.output and "run the same command again" in result.output
