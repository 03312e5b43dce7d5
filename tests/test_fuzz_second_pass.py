"""Defects of the second fuzzing pass, one test each: a file that is not what the verb
expects is one error line naming it, never a traceback."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from faceclean.cleaning.review_file import SCHEMA
from faceclean.cli import main
from faceclean.data.synthetic import clustered_embeddings, make_face_folder, write_embedding_store


def one_line(args: list[str], *needles: str) -> str:
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    assert res.output.strip().count("\n") == 0 and "Traceback" not in res.output, res.output
    for needle in needles:
        assert needle in res.output, res.output
    return res.output


@pytest.fixture()
def store(tmp_path):
    x, y = clustered_embeddings(10, 6, dim=16, seed=0)
    return write_embedding_store(tmp_path / "s.parquet", x, y)


def _review(path, table, fmt=b"1"):
    pq.write_table(table.replace_schema_metadata({b"faceclean_review_format": fmt}), path)
    return path


def test_review_files_that_declare_nonsense(store, tmp_path):
    """A format tag 'abc' (ValueError), missing columns or a decision no review makes
    (KeyError when applied; an unknown kind was applied as a drop)."""
    row = {n: [None] for n in SCHEMA.names}
    row |= {"key": ["img/0.jpg"], "kind": ["removals"], "decision": ["drop"]}
    good = pa.table(row, schema=SCHEMA)
    cases = [
        (_review(tmp_path / "a.parquet", good, b"abc"), "its format tag is"),
        (
            _review(tmp_path / "b.parquet", good.select(["key", "kind", "decision"])),
            "lacks column(s) file",
        ),
        (
            _review(tmp_path / "c.parquet", good.set_column(1, "kind", pa.array(["bogus"]))),
            "no review makes",
        ),
        (
            _review(tmp_path / "d.parquet", good.set_column(2, "decision", pa.array(["explode"]))),
            "no review makes",
        ),
    ]
    for i, (path, message) in enumerate(cases):
        one_line(
            ["clean", str(store), "-o", str(tmp_path / f"c{i}"), "--review", str(path)], message
        )


def test_evaluate_cleaning_with_something_else_as_truth(store, tmp_path):
    out = tmp_path / "c"
    assert CliRunner().invoke(main, ["clean", str(store), "-o", str(out)]).exit_code == 0
    (tmp_path / "text.parquet").write_text("hi")
    for truth, message in [
        (store, "not a truth table of `inject-noise`: column(s) true_label, noisy_label, noise"),
        (out / "scores.parquet", "not a truth table"),
        (tmp_path / "text.parquet", "not a Parquet truth table"),
    ]:
        one_line(["evaluate-cleaning", str(out), "--truth", str(truth)], message)


def test_train_on_a_corrupt_or_empty_parquet_list(tmp_path):
    (tmp_path / "bin.parquet").write_bytes(b"\x00\x01garbage" * 50)
    (tmp_path / "empty.parquet").write_bytes(b"")
    for name in ("bin.parquet", "empty.parquet"):
        one_line(
            ["train", str(tmp_path / name), "-o", str(tmp_path / "run"), "--max-steps", "1"],
            f"{name}: not a Parquet clean list",
        )


@pytest.mark.slow
def test_a_run_whose_config_does_not_match_its_checkpoint(tmp_path):
    """A config.json from another run, or with a mistyped value: RuntimeError / TypeError
    tracebacks in export and eval."""
    faces = make_face_folder(tmp_path / "faces", identities=4, per_identity=4, size=32)
    run = tmp_path / "run"
    args = ["train", str(faces), "-o", str(run), "--max-steps", "2", "--input-size", "32"]
    res = CliRunner().invoke(main, [*args, "--batch-size", "8", "--workers", "0"])
    assert res.exit_code == 0, res.output
    for key, value, message in [
        ("embedding_size", 64, "checkpoint.pt does not match config.json"),
        ("width", "x", "config.json has a bad value"),
    ]:
        bad = tmp_path / f"bad-{key}"
        shutil.copytree(run, bad)
        cfg = json.loads((bad / "config.json").read_text())
        cfg[key] = value
        (bad / "config.json").write_text(json.dumps(cfg))
        one_line(["export", str(bad), "-o", str(tmp_path / f"{key}.onnx")], message)


def test_kind_one_defects_of_the_second_pass(store, tmp_path):
    """Each exited 0 with a wrong or misleading result."""
    # The report named removals/page-0001.html as page-0001.html.
    clean_dir = tmp_path / "c"
    res = CliRunner().invoke(main, ["clean", str(store), "-o", str(clean_dir), "--tau-intra", "2"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(
        main, ["report", str(clean_dir), "-o", str(tmp_path / "rep"), "--json", "-"]
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout[res.stdout.index("{") :])["summary"]
    assert summary["removals_pages"].endswith("rep/removals/page-0001.html")
    for key, value in summary.items():
        if key != "contact_sheet":
            assert (tmp_path / "rep").joinpath(*value.split("rep/")[-1].split("/")).exists(), key
    # The contact sheet was left out without a word when the images were not found.
    assert summary["contact_sheet"].startswith("not made")
    # A NaN norm passed a --min-norm floor.
    t = pq.read_table(store)
    norm = t["norm"].to_numpy().copy()
    norm[1] = float("nan")
    nan_norm = tmp_path / "nan-norm.parquet"
    pq.write_table(t.set_column(t.schema.get_field_index("norm"), "norm", pa.array(norm)), nan_norm)
    res = CliRunner().invoke(
        main, ["filter", str(nan_norm), "--min-norm", "0.5", "-o", str(tmp_path / "f.parquet")]
    )
    assert res.exit_code == 0, res.output
    assert not pq.read_table(tmp_path / "f.parquet")["keep"][1].as_py()
    # A floor that empties the set was reported as tau_intra doing it.
    res = CliRunner().invoke(
        main, ["filter", str(store), "--min-cos-pos", "2", "-o", str(tmp_path / "g.parquet")]
    )
    assert "the floor(s) min_cos_pos 2.0 drops every sample" in res.output, res.output
    # overlap did not see that EVAL was a hard link to TRAIN.
    hard = tmp_path / "hard.parquet"
    hard.hardlink_to(store)
    one_line(["overlap", str(store), str(hard), "-o", str(tmp_path / "ov")], "same file")


def test_a_clean_folder_whose_summary_is_not_cleans(store, tmp_path):
    """`report` on a folder whose summary.json lacked keys was a KeyError traceback."""
    clean_dir = tmp_path / "c"
    assert CliRunner().invoke(main, ["clean", str(store), "-o", str(clean_dir)]).exit_code == 0
    (clean_dir / "summary.json").write_text(json.dumps({"verb": "clean", "summary": {}}))
    one_line(["report", str(clean_dir), "-o", str(tmp_path / "r")], "lacks embeddings")
    (clean_dir / "summary.json").write_text("[1, 2")
    one_line(["report", str(clean_dir), "-o", str(tmp_path / "r")], "not JSON")


def test_third_pass_json_companions_and_a_foreign_truth(store, tmp_path):
    """--json took a verb's companion files (X.truth.parquet, X.failures.tsv, X.idx);
    evaluate-cleaning scored a clean against another inject-noise run's truth (exit 0)."""
    noisy = tmp_path / "n.parquet"
    one_line(
        ["inject-noise", str(store), "-o", str(noisy), "--json", str(tmp_path / "n.truth.parquet")],
        "companion",
    )
    runner = CliRunner()
    other = tmp_path / "m.parquet"
    for out, seed in ((noisy, "0"), (other, "7")):
        res = runner.invoke(main, ["inject-noise", str(store), "-o", str(out), "--seed", seed])
        assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["clean", str(noisy), "-o", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    one_line(
        ["evaluate-cleaning", str(tmp_path / "c"), "--truth", str(tmp_path / "m.truth.parquet")],
        "another label in the truth",
    )
    truth = str(tmp_path / "n.truth.parquet")
    res = runner.invoke(
        main, ["evaluate-cleaning", str(tmp_path / "c"), "--truth", truth, "--json", "-"]
    )
    assert res.exit_code == 0, res.output
    # Numbers in --json are numbers (they were the table's "1.000" strings).
    summary = json.loads(res.stdout[res.stdout.index("{") :])["summary"]
    assert isinstance(summary["removal_precision"], float)
