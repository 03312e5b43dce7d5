"""The filter's per-class state: the class sums become the kept sums in place (dropped rows
spilled and subtracted after the pass), with the same bits as the running subtraction
of 0.2 (a second K x d array), and `clean` holds no all-sample sums at the merge."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from faceclean.cleaning.clean import clean
from faceclean.cleaning.filter import add_rows, class_sums, filter_store, score_batches
from faceclean.cleaning.noise import inject_noise
from faceclean.data.synthetic import clustered_embeddings, write_embedding_store


@pytest.fixture
def store(tmp_path):
    x, y = clustered_embeddings(40, 15, 32, spread=0.7, seed=3)
    path = write_embedding_store(tmp_path / "clean.parquet", x, y, row_group=128)
    ns = inject_noise(pq.read_table(path), flip=0.08, outlier=0.05, split=0.05, seed=4)
    pq.write_table(ns.table, tmp_path / "noisy.parquet", row_group_size=128)
    return tmp_path / "noisy.parquet"


def running_subtraction(path, tau: float, batch_rows: int):
    """0.2's filter: a copy of the class sums, the dropped rows subtracted batch by batch
    during the scoring pass."""
    sums, counts = class_sums(path, batch_rows)
    kept, kept_counts = sums.copy(), counts.copy()
    for batch, scores in score_batches(path, sums, counts, batch_rows=batch_rows):
        drop = np.float64(scores["discriminability"]) < tau
        add_rows(kept, batch["label"][drop], batch["embedding"][drop], sign=-1.0)
        np.subtract.at(kept_counts, batch["label"][drop], 1)
    return sums, kept, kept_counts


@pytest.mark.parametrize("keep_class_sums", [True, False])
def test_kept_sums_in_place_equal_the_running_subtraction(store, tmp_path, keep_class_sums):
    sums, kept, kept_counts = running_subtraction(store, 0.6, 50)
    r = filter_store(
        store, 0.6, tmp_path / "s.parquet", batch_rows=50, keep_class_sums=keep_class_sums
    )
    assert 0 < r.num_samples - r.num_kept < r.num_samples  # rows were dropped, not all
    assert np.array_equal(r.kept_sums, kept)  # bit for bit
    assert np.array_equal(r.kept_counts, kept_counts)
    if keep_class_sums:
        assert np.array_equal(r.class_sums, sums)
        assert not np.shares_memory(r.class_sums, r.kept_sums)
    else:
        assert r.class_sums is None
    # The spill of the dropped rows is gone, beside the scores.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "clean.parquet",
        "noisy.parquet",
        "s.parquet",
    ]


def test_before_kept_sees_the_class_sums(store):
    seen = {}
    r = filter_store(
        store,
        0.6,
        batch_rows=50,
        keep_class_sums=False,
        before_kept=lambda s, c: seen.update(sums=s.copy(), counts=c.copy()),
    )
    sums, counts = class_sums(store, 50)
    assert np.array_equal(seen["sums"], sums) and np.array_equal(seen["counts"], counts)
    assert not np.array_equal(r.kept_sums, sums)


def test_clean_outputs_unchanged_by_dropping_the_class_sums(store, tmp_path):
    """clean keeps no all-sample sums: its merge and clean list are those of merging the
    kept sums of a filter that kept both."""
    from faceclean.cleaning.merge import merge_classes

    r = clean(store, tmp_path / "out", 0.6, 0.5, batch_rows=50, dedup=0.95)
    assert r.filter.class_sums is None
    both = filter_store(store, 0.6, batch_rows=50)
    assert np.array_equal(r.filter.kept_sums, both.kept_sums)
    mr = merge_classes(both.kept_sums, both.kept_counts, 0.5)
    assert r.merge.table.equals(mr.table) and r.merge.pairs.equals(mr.pairs)
    assert (tmp_path / "out" / "dedup.parquet").is_file()
