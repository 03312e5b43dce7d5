"""`faceclean overlap`: training identities shared with an evaluation set, and `--exclude`."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from faceclean.cleaning.faiss_backend import InnerProductIndex, pairs_above
from faceclean.cleaning.overlap import find_overlap, read_exclude, write_overlap
from faceclean.cli import main
from faceclean.data.store import embedding_schema, embedding_table
from faceclean.data.synthetic import clustered_embeddings, write_embedding_store
from faceclean.errors import FacecleanError
from tests.conftest import SHARED_MODEL, SHARED_ORL, needs_shared


def test_pairs_above_is_exact_however_many_matches():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((50, 16)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    # Query 0 is near 30 of the vectors: more than the first k=8 the search looks at.
    base[:30] = base[0] + 0.01 * rng.standard_normal((30, 16))
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    q = base[[0, 40]]
    r, c, s = pairs_above(InnerProductIndex(base, "cpu"), q, 0.9)
    want = np.argwhere(q @ base.T > 0.9)
    assert sorted(zip(r.tolist(), c.tolist(), strict=True)) == sorted(map(tuple, want.tolist()))
    assert len(want) == 31


@pytest.mark.parametrize("backend", ["faiss", "blas"])
def test_pairs_above_never_asks_faiss_past_the_k_cap(monkeypatch, backend):
    """faiss-gpu refuses k > 2048: forced to a cap of 4 on the CPU, the search still
    returns every pair above the threshold (a dense region of 30 near-copies), and no
    search asked for more than 4 neighbours."""
    from faceclean.cleaning import faiss_backend

    monkeypatch.setattr(faiss_backend, "K_CAP", 4)
    rng = np.random.default_rng(1)
    base = rng.standard_normal((300, 16)).astype(np.float32)
    base[:30] = base[0] + 0.01 * rng.standard_normal((30, 16))
    base[100:110] = base[100] + 0.02 * rng.standard_normal((10, 16))
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    index = InnerProductIndex(base, "cpu", backend)
    asked = []
    search = index.search

    def recording(q, k):
        asked.append(k)
        return search(q, k)

    monkeypatch.setattr(index, "search", recording)
    r, c, s = pairs_above(index, base, 0.9)
    want = np.argwhere(base.astype(np.float64) @ base.T.astype(np.float64) > 0.9)
    got = sorted(zip(r.tolist(), c.tolist(), strict=True))
    assert got == sorted(map(tuple, want.tolist()))
    assert len(want) > 30 * 30  # the dense region really was past the cap
    assert max(asked) == 4
    np.testing.assert_allclose(s, np.einsum("nd,nd->n", base[r], base[c]), atol=1e-5)
    if backend == "faiss":  # the FAISS index itself refuses a k above the cap
        with pytest.raises(ValueError, match="cap"):
            search(base[:2], 5)


def _split(tmp_path, x, y):
    """Train: classes 0-29 (first half of each class's images); eval: classes 20-39 (second
    half), relabelled 0-19 — classes 20-29 are in both."""
    first = np.tile(np.arange(10) < 5, 40)
    t = (y < 30) & first
    e = (y >= 20) & ~first
    train = write_embedding_store(tmp_path / "train.parquet", x[t], y[t])
    evaluation = write_embedding_store(tmp_path / "eval.parquet", x[e], y[e] - 20)
    return train, evaluation


def test_overlap_finds_the_shared_classes_and_clean_excludes_them(tmp_path):
    x, y = clustered_embeddings(40, 10, dim=64, seed=3)
    train, evaluation = _split(tmp_path, x, y)
    r = find_overlap(train, evaluation, 0.6, device="cpu")
    assert r.exclude["label"].to_pylist() == list(range(20, 30))
    assert r.exclude["eval_label"].to_pylist() == list(range(10))
    assert r.exclude["identity"].to_pylist()[0] == "id20"
    assert (r.identity_pairs["cosine"].to_numpy() > 0.6).all()
    assert r.summary["train_samples_to_exclude"] == 50

    out = tmp_path / "ov"
    res = CliRunner().invoke(
        main, ["overlap", str(train), str(evaluation), "--tau", "0.6", "-o", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert read_exclude(out).tolist() == list(range(20, 30))
    assert json.loads((out / "summary.json").read_text())["train_classes_to_exclude"] == 10
    with pytest.raises(FacecleanError, match="already exists|--overwrite"):
        write_overlap(r, out)

    clean_dir = tmp_path / "clean"
    res = CliRunner().invoke(
        main, ["clean", str(train), "-o", str(clean_dir), "--exclude", str(out)]
    )
    assert res.exit_code == 0, res.output
    kept = pq.read_table(clean_dir / "clean.parquet")
    assert not set(kept["original_label"].to_pylist()) & set(range(20, 30))
    assert set(kept["original_label"].to_pylist()) == set(range(20))
    summary = json.loads((clean_dir / "summary.json").read_text())
    assert summary["excluded_classes"] == 10 and summary["excluded_samples"] == 50


def test_read_exclude_text_and_errors(tmp_path):
    (tmp_path / "ex.txt").write_text("# from a spreadsheet\n3\n1\n3\n")
    assert read_exclude(tmp_path / "ex.txt").tolist() == [1, 3]
    (tmp_path / "bad.txt").write_text("3\nBob\n")
    with pytest.raises(FacecleanError, match="bad.txt: line 2"):
        read_exclude(tmp_path / "bad.txt")
    with pytest.raises(FacecleanError, match="no exclude list"):
        read_exclude(tmp_path)
    (tmp_path / "binary.lst").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    with pytest.raises(FacecleanError, match="binary.lst: not an exclude list"):
        read_exclude(tmp_path / "binary.lst")


def test_exclude_from_another_label_space_or_any_table_is_refused(tmp_path):
    """Both dropped classes by number before, whoever those numbers were in this store."""
    x, y = clustered_embeddings(40, 10, dim=64, seed=3)
    train, evaluation = _split(tmp_path, x, y)
    out = tmp_path / "ov"
    assert (
        CliRunner()
        .invoke(main, ["overlap", str(train), str(evaluation), "--tau", "0.6", "-o", str(out)])
        .exit_code
        == 0
    )
    # The same exclude list against a store whose labels name other people.
    other = write_embedding_store(tmp_path / "other.parquet", x[:300], y[:300])
    renamed = pq.read_table(other).set_column(
        2, "identity", pa.array([f"person{v}" for v in y[:300]], pa.string())
    )
    pq.write_table(renamed, other)
    # A table with a label column that is not an overlap result.
    pq.write_table(pa.table({"label": pa.array([1, 2], pa.int64())}), tmp_path / "labels.parquet")
    for exclude, message in [
        (out, "comes from another label space"),
        (tmp_path / "labels.parquet", "not an `overlap` exclude table"),
    ]:
        res = CliRunner().invoke(
            main, ["clean", str(other), "-o", str(tmp_path / "c"), "--exclude", str(exclude)]
        )
        assert res.exit_code == 2, res.output
        assert message in res.output and res.output.strip().count("\n") == 0, res.output
        assert not (tmp_path / "c").exists()


def _orl_store(path, model, people, images, rename=None, first_label=0):
    """Embed ORL images of ``people`` (folder names) x ``images`` (file numbers)."""
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    paths, labels, names, feats = [], [], [], []
    for label, person in enumerate(people, first_label):
        for k in images:
            img = Image.open(SHARED_ORL / person / f"{k}.pgm").convert("RGB").resize((112, 112))
            x = (np.asarray(img, np.float32) / 255 - mean) / std
            feats.append(model.run(x.transpose(2, 0, 1)[None].astype(np.float32))[0])
            paths.append(f"{person}/{k}.pgm")
            labels.append(label)
            names.append(rename.get(person, person) if rename else person)
    e = np.asarray(feats)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    schema = embedding_schema(e.shape[1])
    table = embedding_table(paths, np.array(labels), names, e, np.ones(len(e)), schema)
    pq.write_table(table, path)
    return path


@needs_shared
def test_overlap_on_real_faces(tmp_path):
    from faceclean.data.onnx_model import FaceModel

    model = FaceModel(SHARED_MODEL, device="cpu")
    people = [f"s{i}" for i in range(1, 41)]
    # Train: s1-s25, images 1-5. Eval: s19-s40, images 6-10: s19-s25 are in both, with
    # other photos. (Measured: the shared centroids at cosine 0.90-0.95, the closest
    # strangers at 0.59.)
    train = _orl_store(tmp_path / "train.parquet", model, people[:25], range(1, 6))
    evaluation = _orl_store(tmp_path / "eval.parquet", model, people[18:], range(6, 11))
    r = find_overlap(train, evaluation, 0.75, image_tau=0.95, device="cpu")
    shared = set(range(18, 25))  # s19-s25, training labels 18-24
    found = set(r.exclude["label"].to_pylist())
    for row in r.exclude.to_pylist():
        print(row)
    print("identity pairs", r.identity_pairs.num_rows)
    assert found == shared
    assert r.exclude["identity"].to_pylist() == r.exclude["eval_identity"].to_pylist()
    assert r.image_pairs.num_rows == 0  # different photos of the same people are not copies

    # s3's image 1 filed in the evaluation set under another name: a photo in both sets.
    leaked = _orl_store(
        tmp_path / "leak.parquet", model, ["s3"], [1], rename={"s3": "other"}, first_label=22
    )
    r = find_overlap(train, [evaluation, leaked], 0.75, image_tau=0.95, device="cpu")
    assert r.image_pairs["train_path"].to_pylist() == ["s3/1.pgm"]
    assert r.image_pairs["cosine"][0].as_py() > 0.999


def test_overlap_refuses_stores_of_two_models_but_not_two_label_spaces(tmp_path):
    x, y = clustered_embeddings(6, 4, dim=16, seed=0)

    def store(name, sha, space):
        meta = {"model_sha256": sha, "label_space": space}
        schema = embedding_schema(16, metadata=meta)
        ids = [f"p{k}" for k in y]
        pq.write_table(embedding_table(ids, y, ids, x, np.ones(len(y)), schema), tmp_path / name)
        return tmp_path / name

    train, same = store("t.parquet", "aaa", "one"), store("e.parquet", "aaa", "other")
    assert find_overlap(train, same, 0.9, device="cpu").exclude.num_rows == 6
    other = store("o.parquet", "bbb", "other")
    with pytest.raises(FacecleanError, match="o.parquet: the model sha256 differs"):
        find_overlap(train, other, 0.9, device="cpu")


def test_one_store_given_twice_is_refused(tmp_path):
    x, y = clustered_embeddings(4, 3, 16, spread=0.3, seed=0)
    store = write_embedding_store(tmp_path / "a.parquet", x, y)
    with pytest.raises(FacecleanError, match="are the same file"):
        find_overlap(store, store, 0.5)


def test_overlap_with_an_empty_store_is_one_line(tmp_path):
    """An empty evaluation store was a ZeroDivisionError; an empty training one exit 0."""
    x, y = clustered_embeddings(4, 5, dim=16, seed=0)
    full = write_embedding_store(tmp_path / "full.parquet", x, y)
    empty = write_embedding_store(tmp_path / "empty.parquet", x[:0], y[:0])
    for train, evaluation, role in [(full, empty, "evaluation"), (empty, full, "training")]:
        res = CliRunner().invoke(
            main, ["overlap", str(train), str(evaluation), "-o", str(tmp_path / "ov")]
        )
        assert res.exit_code == 2, res.output
        assert f"empty.parquet: the {role} store has no embeddings" in res.output
        assert res.output.strip().count("\n") == 0 and not (tmp_path / "ov").exists()
