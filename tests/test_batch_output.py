"""Batch jobs and logs: progress lines when stderr is not a terminal, full-width tables,
and ``--json`` summaries on every verb."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from faceclean.cli import main
from faceclean.progress import RowProgress


def test_progress_prints_plain_lines_when_not_a_terminal(capsys, monkeypatch):
    monkeypatch.setenv("FACECLEAN_PROGRESS_EVERY", "0")
    bar = RowProgress(True, "train", total=10, done=2, unit="steps")
    for _ in range(3):
        bar.advance(1)
    bar.close()
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4  # three advances and the closing line
    assert lines[0].startswith("train: 3/10 steps (30.0%)") and "ETA" in lines[0]
    assert lines[2].startswith("train: 5/10 steps (50.0%)")
    assert "finished in" in lines[-1]


def test_progress_lines_respect_the_interval(capsys, monkeypatch):
    monkeypatch.setenv("FACECLEAN_PROGRESS_EVERY", "3600")
    bar = RowProgress(True, "align", total=100, unit="img")
    for _ in range(100):
        bar.advance(1)
    bar.close()
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [lines[-1]] and lines[0].startswith("align: 100/100 img (100.0%)")


def test_disabled_progress_prints_nothing(capsys):
    bar = RowProgress(False, "x", total=3)
    bar.advance(3)
    bar.close()
    assert capsys.readouterr().err == ""


def test_every_verb_takes_json():
    runner = CliRunner()
    for name, command in main.commands.items():
        out = runner.invoke(main, [name, "--help"])
        assert out.exit_code == 0, (name, out.output)
        assert "--json" in out.output, f"{name} has no --json"
        assert command.name == name


@pytest.fixture()
def store(tmp_path):
    from faceclean.data.synthetic import clustered_embeddings, write_embedding_store

    x, labels = clustered_embeddings(6, 5, dim=16, seed=0)
    return write_embedding_store(tmp_path / "emb.parquet", x, labels)


def test_filter_json_summary_to_file_and_stdout(store, tmp_path):
    runner = CliRunner()
    target = tmp_path / "summary.json"
    args = ["filter", str(store), "-o", str(tmp_path / "s.parquet"), "--tau-intra", "0.3"]
    r = runner.invoke(main, [*args, "--json", str(target)])
    assert r.exit_code == 0, r.output
    doc = json.loads(target.read_text())
    assert doc["verb"] == "filter" and doc["summary"]["samples"] == 30
    assert doc["summary"]["kept"] + doc["summary"]["dropped"] == 30
    r = runner.invoke(main, [*args[:3], str(tmp_path / "t.parquet"), *args[4:], "--json", "-"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout[r.stdout.index("{") :])["summary"]["samples"] == 30


def test_failed_verb_writes_no_json(tmp_path):
    target = tmp_path / "summary.json"
    r = CliRunner().invoke(
        main,
        ["filter", str(tmp_path / "missing.parquet"), "-o", str(tmp_path / "s.parquet")]
        + ["--json", str(target)],
    )
    assert r.exit_code == 2 and not target.exists()


def test_tables_are_full_width_in_a_log(store, tmp_path):
    """Piped to a file, a summary row longer than 80 columns is printed whole."""
    out = tmp_path / ("a_long_folder_name_" * 5) / "scores.parquet"
    out.parent.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "faceclean.cli", "filter", str(store), "-o", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": ""},
    )
    assert proc.returncode == 0, proc.stderr
    assert str(out) in proc.stderr.replace("\n", "")
    assert str(out) in proc.stderr, "the output path was wrapped or cut"


def test_json_never_writes_over_an_input_or_output(store, tmp_path):
    """--json FILE wrote over the verb's own input store (and its output) and exited 0;
    into a missing folder it was a traceback after the work was done."""
    copy = tmp_path / "copy.parquet"
    copy.write_bytes(store.read_bytes())
    before = copy.read_bytes()
    out = tmp_path / "s.parquet"
    (tmp_path / "c").mkdir()
    cases = [
        (["filter", str(copy), "-o", str(out), "--json", str(copy)], "is also"),
        (["filter", str(store), "-o", str(out), "--json", str(out)], "is also"),
        (
            ["clean", str(store), "-o", str(tmp_path / "c"), "--overwrite"]
            + ["--json", str(tmp_path / "c" / "summary.json")],
            "is also",
        ),
        (
            ["filter", str(store), "-o", str(out), "--json", str(tmp_path / "no" / "x.json")],
            "its folder does not exist",
        ),
    ]
    for args, message in cases:
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 2 and message in r.output, r.output
        assert r.output.strip().count("\n") == 0
    assert copy.read_bytes() == before and not out.exists()
