"""Realistic noise (issue 20): look-alike flips, distractors, junk and near duplicates,
each recorded in the truth and scored per kind by evaluate."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import one_error_line, run

from faceclean.cleaning.noise import NOISE_KINDS, evaluate, inject_noise
from faceclean.data.synthetic import clustered_embeddings, write_embedding_store
from faceclean.errors import FacecleanError


@pytest.fixture
def table(tmp_path):
    x, y = clustered_embeddings(30, 10, 32, spread=0.6, seed=4)
    return pq.read_table(write_embedding_store(tmp_path / "e.parquet", x, y))


@pytest.fixture
def junk_table(tmp_path):
    x, _ = clustered_embeddings(1, 40, 32, spread=2.0, seed=9)
    t = pq.read_table(write_embedding_store(tmp_path / "junk.parquet", x, np.zeros(40, int)))
    # Images of their own (the store's rows are img/<i>.jpg too: a junk source that holds
    # the store's rows is refused).
    t = t.set_column(0, "path", pa.array([f"nonface/{i}.jpg" for i in range(40)]))
    pq.write_table(t, tmp_path / "junk.parquet")
    return t


def _unit(table):
    x = np.stack(table["embedding"].to_numpy(zero_copy_only=False)).astype(np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_lookalike_flips_go_to_the_most_similar_other_identity(table):
    ns = inject_noise(table, 0, 0, 0, seed=1, lookalike=0.2)
    truth = ns.truth
    kind = truth["noise"].to_numpy(zero_copy_only=False)
    assert (kind == "lookalike").sum() == 60 and set(kind) == {"clean", "lookalike"}
    x, y = _unit(table), table["label"].to_numpy()
    cent = np.stack([x[y == k].sum(0) for k in range(30)])
    cent /= np.linalg.norm(cent, axis=1, keepdims=True)
    sims = cent @ cent.T
    np.fill_diagonal(sims, -np.inf)
    rows = kind == "lookalike"
    true, noisy = truth["true_label"].to_numpy(), truth["noisy_label"].to_numpy()
    assert (noisy[rows] == sims.argmax(1)[true[rows]]).all()
    assert (noisy[~rows] == true[~rows]).all()
    assert (ns.table["label"].to_numpy() == noisy).all()


def test_distractors_are_whole_identities_removed_until_their_share_is_reached(table):
    ns = inject_noise(table, 0, 0, 0, seed=2, distractors=0.15)
    t = ns.truth
    rows = t["noise"].to_numpy(zero_copy_only=False) == "distractor"
    assert rows.sum() == 50  # 45 rows asked, whole identities of 10: five of them
    gone = set(t["true_label"].to_numpy()[rows])
    assert len(gone) == 5
    # Every face of a removed identity is a distractor; none is filed under a removed one.
    assert set(t["true_label"].to_numpy()[~rows]).isdisjoint(gone)
    assert set(t["noisy_label"].to_numpy()).isdisjoint(gone)


def test_junk_rows_are_appended_from_the_source_and_filed_under_remaining_identities(
    table, junk_table
):
    ns = inject_noise(table, 0, 0, 0, seed=3, junk=0.1, junk_source=junk_table)
    assert ns.table.num_rows == 330 and ns.table.schema == table.schema
    junk = ns.truth.slice(300)
    assert set(junk["noise"].to_pylist()) == {"junk"}
    assert set(junk["true_label"].to_pylist()) == {-1}
    # 30 rows from a source of 40, none used twice.
    paths = junk["path"].to_pylist()
    assert len(set(paths)) == 30 and all(p.startswith("junk:") for p in paths)
    first = {p: i for i, p in enumerate(junk_table["path"].to_pylist())}
    src = _unit(junk_table)[[first[p.split(":", 1)[1]] for p in paths]]
    assert np.allclose(_unit(ns.table.slice(300)), src, atol=1e-6)
    # A source too small is refused (issue 22: its vectors were re-used, exact copies).
    with pytest.raises(FacecleanError, match=r"asks for 45 non-face rows but the junk source "
                       r"has 40: give a larger source or --junk at most 0.1333"):  # fmt: skip
        inject_noise(table, 0, 0, 0, junk=0.15, junk_source=junk_table)
    with pytest.raises(FacecleanError, match="--junk needs embeddings of non-face"):
        inject_noise(table, 0, 0, 0, junk=0.1)
    x, _ = clustered_embeddings(1, 3, 8, seed=0)
    small = pa.table({"path": ["a", "b", "c"], "embedding": pa.array(x.tolist())})
    small = small.cast(pa.schema([("path", pa.string()), ("embedding", pa.list_(pa.float32(), 8))]))
    with pytest.raises(FacecleanError, match="dimension 8, the store's 32"):
        inject_noise(table, 0, 0, 0, junk=0.1, junk_source=small)


def test_near_duplicates_sit_at_the_asked_cosine_and_keep_their_label(table):
    ns = inject_noise(table, 0, 0, 0, seed=4, duplicates=0.1, duplicate_cosine=0.95)
    dup = ns.truth.slice(300)
    assert set(dup["noise"].to_pylist()) == {"duplicate"}
    assert (dup["true_label"].to_numpy() == dup["noisy_label"].to_numpy()).all()
    index = {p: i for i, p in enumerate(table["path"].to_pylist())}
    src = [index[p.split("#dup")[0]] for p in dup["path"].to_pylist()]
    x, copies = _unit(table), _unit(ns.table.slice(300))
    assert np.allclose(np.einsum("nd,nd->n", x[src], copies), 0.95, atol=1e-5)


def test_all_kinds_together_are_deterministic_and_disjoint(table, junk_table):
    kw = dict(lookalike=0.1, distractors=0.1, junk=0.05, duplicates=0.05, junk_source=junk_table)
    a = inject_noise(table, 0.05, 0.05, 0.05, seed=7, **kw)
    b = inject_noise(table, 0.05, 0.05, 0.05, seed=7, **kw)
    assert a.table.equals(b.table) and a.truth.equals(b.truth)
    counts = {c["values"]: c["counts"] for c in a.truth["noise"].value_counts().to_pylist()}
    assert set(counts) == set(NOISE_KINDS)
    assert counts["lookalike"] == 30 and counts["junk"] == 15 and counts["duplicate"] == 15


def test_evaluate_reports_precision_and_recall_per_noise_kind():
    noise = np.array(["clean"] * 6 + ["lookalike"] * 4 + ["distractor"] * 2 + ["duplicate"] * 2)
    removed = np.zeros(14, bool)
    removed[[0, 6, 7, 8, 10, 12]] = True  # 1 clean, 3 of 4 look-alikes, 1 of 2, 1 duplicate
    m = evaluate(~removed, noise)
    assert m["removal_precision"] == pytest.approx(4 / 6)
    assert m["removal_recall"] == pytest.approx(4 / 6)
    assert m["recall_lookalike"] == pytest.approx(0.75)
    assert m["precision_lookalike"] == pytest.approx(3 / 5)  # 2 non-noise rows removed
    assert m["recall_distractor"] == pytest.approx(0.5)
    assert m["precision_distractor"] == pytest.approx(1 / 3)
    assert m["removed_duplicate"] == pytest.approx(0.5)
    assert m["clean_removed_fraction"] == pytest.approx(2 / 8)
    assert np.isnan(m["recall_flip"]) and "precision_junk" not in m


def test_cli_writes_every_kind_and_names_the_file_on_errors(tmp_path, table, junk_table):
    src = tmp_path / "e.parquet"
    args = ["inject-noise", src, "-o", tmp_path / "n.parquet", "--lookalike", "0.1"]
    r = run(*args, "--junk", "0.05", "--junk-source", tmp_path / "junk.parquet")
    assert r.exit_code == 0, r.output
    truth = pq.read_table(tmp_path / "n.truth.parquet")
    assert {"lookalike", "junk"} <= set(truth["noise"].to_pylist())
    assert pq.read_table(tmp_path / "n.parquet").num_rows == truth.num_rows == 315
    one_error_line(
        run(*args, "--junk", "0.05", "--overwrite"), "e.parquet", "--junk needs embeddings"
    )
    one_error_line(run(*args, "--distractors", "2"), "--distractors")
