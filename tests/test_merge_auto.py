"""`--tau-inter auto` and the look-alike guard (issue 20): merge thresholds from classes
split in two, and links between close but distinct people refused."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import run

from faceclean.cleaning.merge import merge_classes
from faceclean.cleaning.merge_auto import (
    PAPER_TAU_INTER,
    choose_merge_thresholds,
    half_sums,
    link_ratio,
    mean_within,
)
from faceclean.cleaning.noise import evaluate, split_pairs
from faceclean.data.synthetic import write_embedding_store


def faces_with_lookalikes(classes=30, per=12, dim=64, seed=0):
    """Unit embeddings: ``classes`` identities (within-class cosine ~0.9); identity 2j+1 is
    a look-alike of 2j (centres at cosine ~0.8), the last identity is split over two labels
    (label ``classes``). Returns x, noisy labels, true labels."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    for j in range(0, classes - 1, 2):
        mix = centres[j] + 0.75 * centres[j + 1]
        centres[j + 1] = mix / np.linalg.norm(mix)
    true = np.repeat(np.arange(classes), per)
    x = centres[true] + 0.3 * rng.standard_normal((len(true), dim)) / np.sqrt(dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    noisy = true.copy()
    last = np.flatnonzero(true == classes - 1)
    noisy[last[: per // 2]] = classes
    return x.astype(np.float32), noisy, true


def test_half_sums_alternate_kept_samples_in_store_order_across_batches_and_shards(tmp_path):
    x, y, _ = faces_with_lookalikes(6, 7, 16)
    order = np.random.default_rng(1).permutation(len(y))  # classes interleaved
    x, y = x[order], y[order]
    keep = np.random.default_rng(2).random(len(y)) > 0.2
    a = write_embedding_store(tmp_path / "a.parquet", x[:20], y[:20])
    b = write_embedding_store(tmp_path / "b.parquet", x[20:], y[20:])
    sums, counts = half_sums([a, b], keep, int(y.max()) + 1, batch_rows=7)
    for k in range(int(y.max()) + 1):
        rows = np.flatnonzero((y == k) & keep)
        for h in (0, 1):
            assert counts[h, k] == len(rows[h::2])
            assert np.allclose(sums[h, k], x[rows[h::2]].astype(np.float64).sum(0), atol=1e-5)


def test_ratio_is_cross_over_within_mean_cosine_from_sums_alone():
    x, y, _ = faces_with_lookalikes(4, 6, 16)
    x = x.astype(np.float64)
    sums = np.stack([x[y == k].sum(0) for k in range(5)])
    n = np.bincount(y)
    mu = mean_within(sums, n)
    for k in range(5):
        g = x[y == k] @ x[y == k].T
        assert mu[k] == pytest.approx((g.sum() - np.trace(g)) / (n[k] * (n[k] - 1)))
    cross = (x[y == 0] @ x[y == 1].T).mean()
    rho = link_ratio(sums[[0]], sums[[1]], n[[0]], n[[1]], mu[[0]], mu[[1]])
    assert rho[0] == pytest.approx(cross / np.sqrt(mu[0] * mu[1]))


def test_guard_refuses_lookalikes_and_auto_merges_only_the_split():
    x, y, true = faces_with_lookalikes()
    k = int(y.max()) + 1
    sums = np.zeros((k, x.shape[1]))
    np.add.at(sums, y, x.astype(np.float64))
    counts = np.bincount(y)
    halves, hc = half_sums_in_memory(x, y, k)
    tau, ratio, why = choose_merge_thresholds(halves, hc)
    assert "split in two" in why and 0.9 < ratio < 1.0
    loose = merge_classes(sums, counts, 0.5)  # look-alike centroids sit near 0.8
    guarded = merge_classes(sums, counts, 0.5, min_ratio=ratio)
    auto = merge_classes(sums, counts, tau, min_ratio=ratio)
    assert len(loose.groups) > 10  # every look-alike pair merged
    assert guarded.groups == [[29, 30]] and guarded.num_guarded == loose.pairs.num_rows - 1
    assert auto.groups == [[29, 30]]
    assert set(guarded.pairs.column_names) >= {"label_a", "label_b", "cosine", "ratio", "merged"}


def half_sums_in_memory(x, y, k):
    sums, counts = np.zeros((2, k, x.shape[1])), np.zeros((2, k), np.int64)
    for c in range(k):
        rows = np.flatnonzero(y == c)
        for h in (0, 1):
            sums[h, c] = x[rows[h::2]].astype(np.float64).sum(0)
            counts[h, c] = len(rows[h::2])
    return sums, counts


def test_too_few_classes_to_split_fall_back_to_the_paper(tmp_path):
    from faceclean.cleaning.merge_auto import identity_groups

    x, y, _ = faces_with_lookalikes(4, 12)
    tau, ratio, why = choose_merge_thresholds(*half_sums_in_memory(x, y, 5))
    assert tau == PAPER_TAU_INTER and ratio is None and "need 10" in why
    # Nothing measured: the auto filter scores every label alone (no pre-merge).
    path = write_embedding_store(tmp_path / "e.parquet", x, y)
    assert identity_groups(path, "auto", "auto") is None
    r = run("clean", path, "--tau-intra", "auto", "--tau-inter", "auto", "-o", tmp_path / "c")
    assert r.exit_code == 0, r.output


def test_clean_tau_inter_auto_merges_the_split_and_says_why(tmp_path):
    x, y, true = faces_with_lookalikes()
    path = write_embedding_store(tmp_path / "e.parquet", x, y)
    r = run("clean", path, "--tau-inter", "auto", "-o", tmp_path / "c")
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert "split in two" in summary["tau_inter_auto"] and summary["min_link_ratio"] > 0.9
    merges = pq.read_table(tmp_path / "c" / "merges.parquet")
    merged = np.arange(int(y.max()) + 1)
    merged[merges["label"].to_numpy()] = merges["merged_label"].to_numpy()
    kinds = np.where(y == true, "clean", "split")
    truth = {"true_label": true, "noisy_label": y, "noise": kinds}
    import pyarrow as pa

    m = evaluate(np.ones(len(y), bool), kinds, merged, split_pairs(pa.table(truth)))
    assert m["merge_precision"] == 1.0 and m["merge_recall"] == 1.0
    # The paper's threshold merges the look-alikes on these embeddings; a fixed tau
    # keeps its meaning (no guard unless asked).
    r = run("clean", path, "--tau-inter", "0.5", "-o", tmp_path / "p")
    assert json.loads((tmp_path / "p" / "summary.json").read_text())["merged_groups"] > 10
    r = run("merge", path, "--tau-inter", "auto", "-o", tmp_path / "m.parquet")
    assert r.exit_code == 0 and "tau_inter_auto" in r.output


def test_auto_filter_scores_a_split_against_its_identity_group_not_its_twin(tmp_path):
    from faceclean.cleaning.filter import filter_store
    from faceclean.cleaning.merge_auto import identity_groups

    x, y, true = faces_with_lookalikes(per=20)
    path = write_embedding_store(tmp_path / "e.parquet", x, y)
    twin = np.isin(y, [29, 30])
    alone = filter_store(path, "auto").scores
    groups = identity_groups(path, "auto", "auto")
    assert groups[30] == 29 and (groups[:29] == np.arange(29)).all()
    grouped = filter_store(path, "auto", same_identity=groups).scores
    kept = {n: s["keep"].to_numpy(zero_copy_only=False) for n, s in (("a", alone), ("g", grouped))}
    # Each half is as near its twin as its own label: D ~ 1 drops about half of them alone.
    assert kept["a"][twin].mean() < 0.8 and kept["g"][twin].all()
    d = grouped["discriminability"].to_numpy(zero_copy_only=False)
    # The hardest negative is now another identity: 28, the look-alike (centres at ~0.8).
    assert (d[twin] > 1.2).all()
    assert set(grouped["hardest_negative"].to_numpy()[twin]) == {28}
    # Away from the group (28's negative is the group now) the scores are the paper's.
    far = y < 28
    assert np.allclose(d[far], alone["discriminability"].to_numpy()[far], atol=1e-6)
    r = run("clean", path, "--tau-intra", "auto", "--tau-inter", "auto", "-o", tmp_path / "c")
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary["dropped"] == 0 and summary["largest_groups"] == [[29, 30]]
