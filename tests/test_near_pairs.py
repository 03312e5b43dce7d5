"""Exact near-duplicate pairs without all-pairs (faceclean.cleaning.near_pairs)."""

from __future__ import annotations

import numpy as np
import pytest

from faceclean.cleaning import near_pairs as np_mod
from faceclean.cleaning.dedup import find_duplicates
from faceclean.cleaning.near_pairs import near_pairs, radius
from faceclean.data.synthetic import write_embedding_store

TAUS = (0.98, 0.9, 0.7)


def _at_cosine(a: np.ndarray, cos: float, rng) -> np.ndarray:
    """A unit vector at exactly ``cos`` from unit ``a``."""
    u = rng.standard_normal(len(a))
    u -= (u @ a) * a
    u /= np.linalg.norm(u)
    return cos * a + np.sqrt(1 - cos * cos) * u


def face_like(seed: int = 0, classes: int = 60, per: int = 12, dim: int = 32):
    """Face-like unit vectors (same-class cosine ~0.58, other classes ~0) with planted
    trouble: junk rows far from every class, mislabelled rows, near-copies inside a class
    and across classes, and pairs 2e-4 above and below each tested threshold."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    y = np.repeat(np.arange(classes), per)
    noise = rng.standard_normal((len(y), dim))
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    x = np.sqrt(0.58) * centres[y] + np.sqrt(0.42) * noise
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    n = len(y)
    x[rng.choice(n, 25, replace=False)] = rng.standard_normal((25, dim))  # junk
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y[rng.choice(n, 20, replace=False)] = rng.integers(0, classes, 20)  # mislabelled
    free = iter(rng.permutation(n).tolist())
    for _ in range(30):  # near-copies, mostly across classes (random rows)
        a, b = next(free), next(free)
        x[b] = _at_cosine(x[a], rng.uniform(0.985, 0.9999), rng)
    for tau in TAUS:  # ties: just above and just below the threshold
        for delta in (2e-4, -2e-4, 5e-4, -5e-4):
            a, b = next(free), next(free)
            x[b] = _at_cosine(x[a], tau + delta, rng)
    a = next(free)
    for _ in range(3):  # a chain of copies: one group of four
        b = next(free)
        x[b] = _at_cosine(x[a], 0.99, rng)
        a = b
    return x.astype(np.float32), y


def brute_force(x: np.ndarray, tau: float) -> set[tuple[int, int]]:
    x = x.astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    a, b = np.nonzero(np.triu(x @ x.T > tau, 1))
    return set(zip(a.tolist(), b.tolist(), strict=True))


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    x, y = face_like()
    tmp = tmp_path_factory.mktemp("near")
    half = len(y) // 2  # two shards of one store, small row groups: many batches
    s1 = write_embedding_store(tmp / "a.parquet", x[:half], y[:half], row_group=100)
    s2 = write_embedding_store(tmp / "b.parquet", x[half:], y[half:], row_group=100)
    return [s1, s2], x, y


@pytest.mark.parametrize("tau", TAUS)
def test_near_pairs_equal_brute_force(shards, tau):
    paths, x, y = shards
    a, b, cos = near_pairs(paths, tau, batch_rows=64)
    want = brute_force(x, tau)
    assert set(zip(a.tolist(), b.tolist(), strict=True)) == want
    assert len(a) == len(want) and (a < b).all()  # each pair once
    np.testing.assert_allclose(cos, np.einsum("nd,nd->n", x[a], x[b]), atol=1e-5)
    # The planted pairs 2e-4 above tau are in, those 2e-4 below are out (no float slip).
    assert len(want) >= 30


def test_near_pairs_exact_when_every_row_is_wide(shards, monkeypatch):
    """A candidate cap of one cell makes most rows "wide" (cells recomputed after the
    pass with the per-cell test); small read-back chunks: still exactly brute force."""
    paths, x, _ = shards
    monkeypatch.setattr(np_mod, "LIST_CAP", 1)
    monkeypatch.setattr(np_mod, "CHUNK_ROWS", 7)
    for tau in (0.9, 0.5):
        a, b, _ = near_pairs(paths, tau, batch_rows=50)
        assert set(zip(a.tolist(), b.tolist(), strict=True)) == brute_force(x, tau)


def test_radius_is_the_bound():
    rng = np.random.default_rng(3)
    a = rng.standard_normal(16)
    a /= np.linalg.norm(a)
    for tau in (0.99, 0.9, 0.0, -1.0):
        b = _at_cosine(a, tau, rng)
        assert np.linalg.norm(a - b) <= radius(tau)
        assert radius(tau) - np.linalg.norm(a - b) < 2e-4


def test_find_duplicates_groups_are_the_brute_force_components(tmp_path):
    x, y = face_like(seed=1)
    store = write_embedding_store(tmp_path / "s.parquet", x, y, row_group=128)
    r = find_duplicates(store, 0.98)
    # Brute-force groups: connected components of the pairs above the threshold.
    parent = list(range(len(y)))

    def find(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for a, b in brute_force(x, 0.98):
        parent[max(find(a), find(b))] = min(find(a), find(b))
    want: dict[int, set[int]] = {}
    for i in range(len(y)):
        want.setdefault(find(i), set()).add(i)
    want_groups = sorted(sorted(g) for g in want.values() if len(g) > 1)
    got: dict[int, set[int]] = {}
    for row in r.table.to_pylist():
        got.setdefault(row["group"], set()).add(int(row["path"].split("/")[1].split(".")[0]))
    assert sorted(sorted(g) for g in got.values()) == want_groups
    assert max(len(g) for g in want_groups) == 4  # the planted chain
    across = sum(len({int(y[i]) for i in g}) > 1 for g in want_groups)
    assert r.summary["duplicate_groups_across_classes"] == across > 0


def test_overlap_image_pairs_stream_and_equal_brute_force(tmp_path):
    """`overlap --image-tau`: the training store streamed in small row groups against the
    evaluation images gives exactly the brute-force pairs (near-copies planted across)."""
    from faceclean.cleaning.overlap import find_overlap

    x, y = face_like(seed=2)
    rng = np.random.default_rng(5)
    train_rows = np.flatnonzero(y < 40)
    eval_rows = np.flatnonzero(y >= 40)
    for t, e in zip(train_rows[:12], eval_rows[:12], strict=True):
        x[e] = _at_cosine(x[t], 0.95 + rng.choice([2e-4, -2e-4, 0.03]), rng)
    train = write_embedding_store(tmp_path / "t.parquet", x[train_rows], y[train_rows], 50)
    evaluation = write_embedding_store(tmp_path / "e.parquet", x[eval_rows], y[eval_rows] - 40)
    r = find_overlap(train, evaluation, 0.99, image_tau=0.95)
    xt = x[train_rows].astype(np.float64)
    xe = x[eval_rows].astype(np.float64)
    ti, ei = np.nonzero(xt @ xe.T > 0.95)
    want = {(f"img/{a}.jpg", f"img/{b}.jpg") for a, b in zip(ti.tolist(), ei.tolist(), strict=True)}
    pairs = r.image_pairs
    got = set(zip(pairs["train_path"].to_pylist(), pairs["eval_path"].to_pylist(), strict=True))
    assert got == want and len(want) >= 8
    cos = r.image_pairs["cosine"].to_numpy()
    assert (np.diff(cos) <= 0).all()  # best first


def test_clean_dedup_shares_the_filters_product(tmp_path, monkeypatch):
    """`clean --dedup` (no --dedup-keep) finds its pairs in the filter's own similarity
    blocks: the same groups as the standalone search and as brute force, wide rows included,
    and the filter's scores are those of a clean without --dedup."""
    import pyarrow.parquet as pq

    from faceclean.cleaning.clean import clean

    monkeypatch.setattr(np_mod, "LIST_CAP", 2)
    x, y = face_like(seed=4)
    store = write_embedding_store(tmp_path / "s.parquet", x, y, row_group=100)
    with_dedup = clean(store, tmp_path / "d", dedup=0.9, batch_rows=64)
    plain = clean(store, tmp_path / "p", batch_rows=64)
    table = pq.read_table(with_dedup.outputs["clean"].parent / "dedup.parquet")
    alone = find_duplicates(store, 0.9)
    assert table.equals(alone.table)
    rows = {int(p.split("/")[1].split(".")[0]) for p in table["path"].to_pylist()}
    assert rows == {i for pair in brute_force(x, 0.9) for i in pair}
    assert not list((tmp_path / "d").glob(".dedup-*"))  # the spill is gone
    a = pq.read_table(with_dedup.outputs["scores"])
    b = pq.read_table(plain.outputs["scores"])
    assert a.equals(b)
    assert with_dedup.summary["duplicate_groups"] == alone.summary["duplicate_groups"]
    # On the FAISS backend the filter has no block to share: one more BLAS product.
    faiss_run = clean(store, tmp_path / "f", dedup=0.9, batch_rows=64, backend="faiss")
    assert pq.read_table(tmp_path / "f" / "dedup.parquet").equals(alone.table)
    assert faiss_run.summary["kept"] == plain.summary["kept"]


def test_class_sums_without_parquet_statistics_grow_to_the_same_result(tmp_path):
    """class_sums sizes its array from the row-group statistics; a store written without
    them takes the growing path and gives the same sums and counts."""
    import pyarrow.parquet as pq

    from faceclean.cleaning.filter import class_sums

    x, y = face_like(seed=6, classes=30, per=5)
    with_stats = write_embedding_store(tmp_path / "a.parquet", x, y, row_group=40)
    bare = tmp_path / "b.parquet"
    pq.write_table(pq.read_table(with_stats), bare, write_statistics=False, row_group_size=40)
    assert pq.ParquetFile(bare).metadata.row_group(0).column(1).statistics is None
    s1, c1 = class_sums(with_stats, batch_rows=16)
    s2, c2 = class_sums(bare, batch_rows=16)
    assert s1.dtype == np.float32 and s1.shape == (30, x.shape[1])
    assert np.array_equal(s1, s2) and np.array_equal(c1, c2)
    assert np.abs(s1 - np.stack([x[y == k].sum(0) for k in range(30)])).max() < 1e-5


def test_clean_dedup_on_a_bad_store_leaves_nothing_behind(tmp_path):
    """A NaN embedding stops `clean --dedup` with the named error; no output folder and no
    spill file are left."""
    import gc

    from faceclean.cleaning.clean import clean
    from faceclean.errors import FacecleanError

    x, y = face_like(seed=7, classes=20, per=12)
    x[33] = np.nan
    store = write_embedding_store(tmp_path / "s.parquet", x, y)
    with pytest.raises(FacecleanError, match="row 33: embedding contains NaN"):
        clean(store, tmp_path / "out", dedup=0.98)
    gc.collect()
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.rglob(".dedup-*")) and not list(tmp_path.glob(".out.tmp-*"))
