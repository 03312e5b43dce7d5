"""Near-duplicate groups: `faceclean clean --dedup TAU [--dedup-keep]`."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
from click.testing import CliRunner

from faceclean.cleaning.dedup import find_duplicates
from faceclean.cleaning.graph import components
from faceclean.cli import main
from faceclean.data.synthetic import clustered_embeddings, write_embedding_store


def test_components_follow_chains():
    comp = components(6, np.array([0, 1, 4]), np.array([1, 2, 5]))
    assert comp.tolist() == [0, 0, 0, 3, 4, 4]
    # A long chain given in the worst order still ends in one component.
    n = 200
    comp = components(n, np.arange(n - 1)[::-1], np.arange(1, n)[::-1])
    assert (comp == 0).all()


def _with_duplicates(tmp_path):
    """20 classes x 8; rows 1, 2 copy row 0 (class 0, tiny noise); row 100 (class 12) is
    a copy of row 50 (class 6): a duplicate across classes."""
    x, y = clustered_embeddings(20, 8, dim=64, seed=1)
    rng = np.random.default_rng(0)
    for i in (1, 2):
        x[i] = x[0] + 1e-3 * rng.standard_normal(64)
    x[100] = x[50]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return write_embedding_store(tmp_path / "dup.parquet", x, y), x, y


def test_find_duplicates_groups_within_and_across_classes(tmp_path):
    store, x, y = _with_duplicates(tmp_path)
    r = find_duplicates(store, 0.98, keep_one=True, device="cpu")
    t = r.table.to_pylist()
    groups = {}
    for row in t:
        groups.setdefault(row["group"], []).append(row)
    assert sorted(len(g) for g in groups.values()) == [2, 3]
    big = groups[0]  # largest first
    assert [row["path"] for row in big] == ["img/0.jpg", "img/1.jpg", "img/2.jpg"]
    assert all(row["within_class"] for row in big)
    assert [row["keep"] for row in big] == [True, False, False]
    cross = groups[1]
    assert [row["label"] for row in cross] == [6, 12] and not cross[0]["within_class"]
    assert all(row["keep"] for row in cross)  # one per class: both stay, for a person
    assert r.summary["duplicate_groups"] == 2
    assert r.summary["duplicate_groups_across_classes"] == 1
    assert r.summary["duplicates_dropped"] == 2
    assert r.keep.sum() == len(y) - 2
    # Every listed cosine is a real pair above the threshold.
    assert min(row["cosine"] for row in t) > 0.98
    none = find_duplicates(store, 0.9999999, device="cpu")
    assert none.summary["duplicate_groups"] == 1  # only the exact copy is left


def test_clean_dedup_keep_drops_the_copies_before_the_centroids(tmp_path):
    store, x, y = _with_duplicates(tmp_path)
    out = tmp_path / "c"
    res = CliRunner().invoke(
        main, ["clean", str(store), "-o", str(out), "--dedup", "0.98", "--dedup-keep"]
    )
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["duplicates_dropped"] == 2 and summary["samples"] == len(y) - 2
    scores = pq.read_table(out / "scores.parquet")
    assert "img/1.jpg" not in scores["path"].to_pylist()
    assert pq.read_table(out / "dedup.parquet").num_rows == 5
    assert not (out / ".input.parquet").exists()
    # Without --dedup-keep the groups are reported and nothing is dropped.
    out2 = tmp_path / "c2"
    res = CliRunner().invoke(main, ["clean", str(store), "-o", str(out2), "--dedup", "0.98"])
    assert res.exit_code == 0, res.output
    assert json.loads((out2 / "summary.json").read_text())["samples"] == len(y)


def test_dedup_options_that_would_silently_mislead_are_refused(tmp_path):
    """--dedup -1 --dedup-keep dropped 72 of 80 images; --dedup-keep alone was ignored."""
    store, x, y = _with_duplicates(tmp_path)
    out = tmp_path / "c"
    for args, message in [
        (["--dedup", "-1", "--dedup-keep"], "pass --force"),
        (["--dedup", "0.5"], "pass --force"),
        (["--dedup-keep"], "--dedup-keep needs --dedup"),
    ]:
        res = CliRunner().invoke(main, ["clean", str(store), "-o", str(out), *args])
        assert res.exit_code == 2 and message in res.output, res.output
        assert res.output.strip().count("\n") == 0 and not out.exists()
    res = CliRunner().invoke(
        main, ["clean", str(store), "-o", str(out), "--dedup", "0.5", "--force"]
    )
    assert res.exit_code == 0, res.output


def test_huge_batch_rows_is_one_line(tmp_path):
    store, _, _ = _with_duplicates(tmp_path)
    res = CliRunner().invoke(
        main, ["filter", str(store), "-o", str(tmp_path / "s.parquet"), "--batch-rows", "1" * 25]
    )
    assert res.exit_code == 2 and "--batch-rows" in res.output, res.output
    assert res.output.strip().count("\n") == 0
