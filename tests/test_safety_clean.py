"""The cleaning verbs never write over an input, never replace an output without
--overwrite, never leave a mix of two runs, never report success for nothing, and turn
every bad option or input into one named line."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import one_error_line, run

import faceclean.cleaning.clean as clean_module
from faceclean.cleaning.clean import clean
from faceclean.cleaning.filter import filter_store
from faceclean.cleaning.merge import merge_classes
from faceclean.data.synthetic import clustered_embeddings, write_embedding_store
from faceclean.errors import FacecleanError


@pytest.fixture
def store(tmp_path):
    x, y = clustered_embeddings(12, 8, 16, spread=0.5, seed=3)
    return write_embedding_store(tmp_path / "e.parquet", x, y)


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_inject_noise_and_merge_never_write_over_their_input(store, tmp_path):
    before = store.read_bytes()
    one_error_line(run("inject-noise", store, "-o", store, "--overwrite"), "is also an input")
    one_error_line(run("merge", store, "-o", store, "--overwrite"), "is also an input")
    one_error_line(run("filter", store, "-o", tmp_path / "x/../e.parquet"), "is also an input")
    # the companion (truth) name is checked too
    other = tmp_path / "sub" / "n.truth.parquet"
    other.parent.mkdir()
    other.write_bytes(before)
    one_error_line(
        run("inject-noise", other, "-o", tmp_path / "sub" / "n.parquet", "--overwrite"),
        "n.truth.parquet: is also an input",
    )
    assert listing(other.parent) == ["n.truth.parquet"] and other.read_bytes() == before
    other.unlink()
    other.parent.rmdir()
    # a clean folder holding the input would delete it when swapped in
    one_error_line(run("clean", store, "-o", tmp_path, "--overwrite"), "holds the input")
    assert store.read_bytes() == before
    assert listing(tmp_path) == ["e.parquet"]


def test_existing_outputs_need_overwrite_checked_before_work(store, tmp_path):
    out = tmp_path / "n.parquet"
    assert run("inject-noise", store, "-o", out).exit_code == 0
    first = out.read_bytes(), (tmp_path / "n.truth.parquet").read_bytes()
    one_error_line(run("inject-noise", store, "-o", out, "--seed", "5"), "--overwrite")
    assert (out.read_bytes(), (tmp_path / "n.truth.parquet").read_bytes()) == first
    (tmp_path / "n.parquet").unlink()  # the truth alone also blocks a new run
    one_error_line(run("inject-noise", store, "-o", out), "n.truth.parquet", "--overwrite")
    assert run("inject-noise", store, "-o", out, "--seed", "5", "--overwrite").exit_code == 0
    assert out.exists() and (tmp_path / "n.truth.parquet").read_bytes() != first[1]
    for verb, target in (("filter", "s.parquet"), ("merge", "m.parquet"), ("clean", "c")):
        assert run(verb, out, "-o", tmp_path / target).exit_code == 0
        one_error_line(run(verb, out, "-o", tmp_path / target), "already exists")
        assert run(verb, out, "-o", tmp_path / target, "--overwrite").exit_code == 0
    assert run("report", tmp_path / "c").exit_code == 0
    one_error_line(run("report", tmp_path / "c"), "report", "already exists")
    one_error_line(run("report", tmp_path / "c", "-o", tmp_path / "c", "--overwrite"), "input")
    truth = tmp_path / "n.truth.parquet"
    assert run("evaluate-cleaning", tmp_path / "c", "--truth", truth, "--sweep").exit_code == 0
    one_error_line(
        run("evaluate-cleaning", tmp_path / "c", "--truth", truth, "--sweep"), "sweep.csv"
    )
    # a directory where a file is expected, a file where a folder is expected
    one_error_line(run("filter", out, "-o", tmp_path / "c", "--overwrite"), "is a folder")
    one_error_line(run("clean", out, "-o", truth, "--overwrite"), "is not a folder")
    one_error_line(run("filter", out, "-o", truth / "s.parquet"), "is not a folder")


def test_a_failed_clean_rerun_leaves_the_previous_result_whole(store, tmp_path, monkeypatch):
    out = tmp_path / "c"
    first = clean(store, out, 0.3, 0.62, fmt="lst")
    files = {p.name: p.read_bytes() for p in out.iterdir()}

    def dies(*a, **k):
        raise KeyboardInterrupt  # as a kill would, after scores, merges and pairs exist

    monkeypatch.setattr(clean_module, "write_clean_list", dies)
    with pytest.raises(KeyboardInterrupt):
        clean(store, out, 5.0, 0.62, fmt="parquet", overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files
    assert listing(tmp_path) == ["c", "e.parquet"]  # no temporary, no lock left
    monkeypatch.undo()
    # switching --format replaces the folder whole: no old list beside the new summary
    r = clean(store, out, 0.3, 0.62, fmt="parquet", overwrite=True)
    assert listing(out) == sorted(
        ["scores.parquet", "merges.parquet", "pairs.parquet", "clean.parquet", "summary.json"]
    )
    assert r.outputs["clean"] == out / "clean.parquet" and r.num_clean_rows == first.num_clean_rows


def test_a_threshold_that_drops_everything_is_an_error_not_an_empty_result(store, tmp_path):
    with pytest.raises(FacecleanError, match=r"tau_intra 1000.0 drops every sample"):
        clean(store, tmp_path / "c", 1000.0, 0.62)
    assert listing(tmp_path) == ["e.parquet"]
    line = one_error_line(
        run("merge", store, "--tau-intra", "1000", "-o", tmp_path / "m.parquet"),
        "drops every sample",
    )
    assert "lower --tau-intra" in line and listing(tmp_path) == ["e.parquet"]
    # merge over nothing is an empty, consistent result (no ZeroDivisionError)
    r = merge_classes(np.zeros((4, 16)), np.zeros(4, np.int64), 0.62)
    assert r.table.num_rows == 0 and r.pairs.num_rows == 0 and r.groups == []


def test_negative_tau_inter_needs_force_and_a_big_merge_warns(store, tmp_path):
    line = one_error_line(run("clean", store, "--tau-inter", "-0.2", "-o", tmp_path / "c"))
    assert "--force" in line and not (tmp_path / "c").exists()
    r = run("clean", store, "--tau-inter", "-0.2", "--force", "-o", tmp_path / "c")
    assert r.exit_code == 0, r.output
    assert "WARNING" in r.output and "merged 100% of the 12 classes" in r.output
    summary = (tmp_path / "c" / "summary.json").read_text()
    assert '"merged_share": 1.0' in summary and "check the threshold" in summary


def _table(tmp_path, **columns):
    x, y = clustered_embeddings(6, 3, 8, seed=1)
    t = {
        "path": pa.array([f"p{i}.png" for i in range(len(y))]),
        "label": pa.array(y, pa.int64()),
        "identity": pa.array([str(v) for v in y]),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel(), pa.float32()), 8),
        "norm": pa.array(np.ones(len(y), np.float32)),
    }
    t.update(columns)
    pq.write_table(pa.table(t), tmp_path / "bad.parquet")
    return tmp_path / "bad.parquet"


def test_null_and_absurd_values_are_named_errors(tmp_path):
    labels = pa.array([0, 0, None, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5], pa.int64())
    with pytest.raises(FacecleanError, match=r"bad\.parquet: row 2: label is null"):
        filter_store(_table(tmp_path, label=labels), 0.3)
    emb = pa.array([[0.1] * 8] * 3 + [None] + [[0.1] * 8] * 14, pa.list_(pa.float32(), 8))
    with pytest.raises(FacecleanError, match=r"bad\.parquet: row 3: embedding is null"):
        filter_store(_table(tmp_path, embedding=emb), 0.3)
    inner = pa.array([[0.1] * 8] * 4 + [[0.1] * 7 + [None]] + [[0.1] * 8] * 13)
    inner = inner.cast(pa.list_(pa.float32(), 8))
    with pytest.raises(FacecleanError, match=r"row 4: embedding is null"):
        filter_store(_table(tmp_path, embedding=inner), 0.3)
    huge = np.arange(18) % 6
    huge[7] = 1 << 40
    with pytest.raises(FacecleanError, match=r"row 7: label 1099511627776 is far beyond"):
        clean(_table(tmp_path, label=pa.array(huge)), tmp_path / "c")
    one_error_line(
        run("inject-noise", tmp_path / "bad.parquet", "-o", tmp_path / "n.parquet"),
        "bad.parquet: label 1099511627776",
    )
    assert listing(tmp_path) == ["bad.parquet"]


def test_lst_refuses_a_path_with_a_tab_or_newline(tmp_path):
    paths = pa.array([f"a\tb{i}.png" if i == 4 else f"p{i}.png" for i in range(18)])
    with pytest.raises(FacecleanError, match=r"clean\.lst: path 'a\\tb4\.png' holds a tab"):
        clean(_table(tmp_path, path=paths), tmp_path / "c", 0.0, 0.99, fmt="lst")
    assert listing(tmp_path) == ["bad.parquet"]
    paths = pa.array([f"a\nb{i}.png" if i == 2 else f"p{i}.png" for i in range(18)])
    with pytest.raises(FacecleanError, match=r"line break"):
        clean(_table(tmp_path, path=paths), tmp_path / "c", 0.0, 0.99, fmt="lst")


@pytest.mark.parametrize(
    "args, option",
    [
        (["filter", "{e}", "-o", "{t}/s.parquet", "--batch-rows", "0"], "--batch-rows"),
        (["filter", "{e}", "-o", "{t}/s.parquet", "--tau-intra", "nan"], "--tau-intra"),
        (["filter", "{e}", "-o", "{t}/s.parquet", "--loo-below", "-1"], "--loo-below"),
        (["clean", "{e}", "-o", "{t}/c", "--tau-inter", "1.5"], "--tau-inter"),
        (["clean", "{e}", "-o", "{t}/c", "--tau-inter", "inf"], "--tau-inter"),
        (["clean", "{e}", "-o", "{t}/c", "--max-group-size", "-3"], "--max-group-size"),
        (["merge", "{e}", "-o", "{t}/m.parquet", "--tau-intra", "-inf"], "--tau-intra"),
        (["inject-noise", "{e}", "-o", "{t}/n.parquet", "--flip", "1.5"], "--flip"),
        (["inject-noise", "{e}", "-o", "{t}/n.parquet", "--outlier", "-0.1"], "--outlier"),
        (["inject-noise", "{e}", "-o", "{t}/n.parquet", "--split", "nan"], "--split"),
        (["inject-noise", "{e}", "-o", "{t}/n.parquet", "--seed", "-1"], "--seed"),
    ],
)
def test_bad_numeric_options_are_one_line_errors(store, tmp_path, args, option):
    r = run(*[a.format(e=store, t=tmp_path) for a in args])
    assert r.exit_code == 2 and "Traceback" not in r.output
    errors = [line for line in r.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and option in errors[0], r.output
    assert listing(tmp_path) == ["e.parquet"]


def test_inject_noise_api_refuses_bad_fractions():
    t = pa.table({"path": ["a", "b"], "label": [0, 1]})
    for bad in (1.5, -0.1, math.nan):
        with pytest.raises(FacecleanError, match="is a fraction in"):
            from faceclean.cleaning.noise import inject_noise

            inject_noise(t, flip=bad)


def test_filter_that_keeps_nothing_warns(store, tmp_path):
    r = run("filter", store, "--tau-intra", "1000", "-o", tmp_path / "s.parquet")
    assert r.exit_code == 0 and "WARNING: tau_intra 1000.0 drops every sample" in r.output
    assert not pq.read_table(tmp_path / "s.parquet")["keep"].to_numpy(zero_copy_only=False).any()


def test_a_full_disk_is_one_line_and_leaves_nothing(store, tmp_path, monkeypatch):
    import errno

    import faceclean.cleaning.filter as filter_module

    class Full:
        def __init__(self, where, *a, **k):
            raise OSError(errno.ENOSPC, "No space left on device", str(where))

    monkeypatch.setattr(filter_module.pq, "ParquetWriter", Full)
    line = one_error_line(run("filter", store, "-o", tmp_path / "s.parquet"))
    # The output the user asked for, not the internal temporary it was being built in.
    assert "s.parquet: No space left on device" in line and ".tmp-" not in line
    assert listing(tmp_path) == ["e.parquet"]
