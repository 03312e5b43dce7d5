"""Models as other exporters write them (built with onnx.helper here): a batch dimension of
-1 (paddle2onnx), several outputs (AdaFace's (embedding, norm)), NHWC inputs (TensorFlow);
and the metadata that lets shards and later stages trust where embeddings came from."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_onnx, tensor
from onnx import helper, numpy_helper

from faceclean.cleaning.filter import class_sums
from faceclean.data.extraction import extract
from faceclean.data.store import open_stores, read_metadata
from faceclean.errors import FacecleanError

W = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)


def _pooled(nodes_after, outputs, path, batch="N", layout="NCHW", extra_init=()):
    """x -> mean over H, W -> [N, 3] @ W -> f [N, 8], then ``nodes_after``."""
    if layout == "NCHW":
        shape, axes = [batch, 3, 112, 112], [2, 3]
    else:
        shape, axes = [batch, 112, 112, 3], [1, 2]
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["p"], axes=axes, keepdims=0),  # opset 17
        helper.make_node("MatMul", ["p", "w"], ["f"]),
        *nodes_after,
    ]
    init = [
        numpy_helper.from_array(W, "w"),
        *extra_init,
    ]
    return make_onnx(path, nodes, [tensor("x", shape)], outputs, init)


def _features(table):
    return np.stack(table["embedding"].to_numpy(zero_copy_only=False))


def _reference(faces):
    """What the pooled model computes for every image of ``faces``, by hand."""
    from faceclean.data.datasets import open_dataset
    from faceclean.data.preprocess import decode_image

    ds = open_dataset(faces)
    x = np.stack([np.asarray(decode_image(ds.read(i)), np.float32) for i in range(len(ds))])
    f = ((x - 127.5) / 127.5).mean(axis=(1, 2)) @ W
    return f


def test_batch_dimension_minus_one_is_dynamic(faces, tmp_path):
    model = _pooled(
        [helper.make_node("Identity", ["f"], ["y"])],
        [tensor("y", [-1, 8])],
        tmp_path / "p.onnx",
        -1,
    )
    result = extract(faces, model, preset="insightface", batch_size=16)
    assert result.batch_mode == "dynamic" and result.num_written == 48
    f = _reference(faces)
    assert (
        np.abs(_features(result.table) - f / np.linalg.norm(f, axis=1, keepdims=True)).max() < 1e-5
    )


def test_two_outputs_pick_the_embedding_and_record_the_norm(faces, tmp_path):
    # AdaFace exports (normalised embedding, norm [N,1]); the norm column is the model's.
    nodes = [
        helper.make_node("ReduceL2", ["f"], ["n"], axes=[1], keepdims=1),
        helper.make_node("Div", ["f", "n"], ["emb"]),
        helper.make_node("Mul", ["n", "three"], ["norm"]),
    ]
    init = [
        numpy_helper.from_array(np.array(3.0, np.float32), "three"),
    ]
    outputs = [tensor("norm", ["N", 1]), tensor("emb", ["N", 8])]  # norm listed first on purpose
    model = _pooled(nodes, outputs, tmp_path / "ada.onnx", extra_init=init)
    table = extract(faces, model, preset="insightface").table
    f = _reference(faces)
    assert np.allclose(table["norm"].to_numpy(), 3 * np.linalg.norm(f, axis=1), rtol=1e-4)
    assert np.abs(_features(table) - f / np.linalg.norm(f, axis=1, keepdims=True)).max() < 1e-5


def test_ambiguous_outputs_are_refused_by_name_and_output_chooses(faces, tmp_path):
    nodes = [
        helper.make_node("Identity", ["f"], ["a"]),
        helper.make_node("Neg", ["f"], ["b"]),
    ]
    model = _pooled(nodes, [tensor("a", ["N", 8]), tensor("b", ["N", 8])], tmp_path / "two.onnx")
    with pytest.raises(
        FacecleanError,
        match=r"two\.onnx: model has several \[N, dim\] outputs \('a' \[2, 8\], 'b' \[2, 8\]\)",
    ):
        extract(faces, model, preset="insightface")
    a = extract(faces, model, preset="insightface", output_name="a").table
    b = extract(faces, model, preset="insightface", output_name="b").table
    assert np.allclose(_features(a), -_features(b), atol=1e-6)
    with pytest.raises(FacecleanError, match=r"two\.onnx: model has no output 'c'"):
        extract(faces, model, preset="insightface", output_name="c")


def test_nhwc_model_gets_a_transposed_input(faces, tmp_path):
    ident = [helper.make_node("Identity", ["f"], ["y"])]
    nchw = _pooled(ident, [tensor("y", ["N", 8])], tmp_path / "nchw.onnx")
    nhwc = _pooled(ident, [tensor("y", ["N", 8])], tmp_path / "nhwc.onnx", layout="NHWC")
    # a BGR-sensitive check: the model mixes channels with W, so a wrong layout would not match
    a = extract(faces, nchw, preset="insightface").table
    b = extract(faces, nhwc, preset="insightface").table
    assert np.abs(_features(a) - _features(b)).max() < 1e-5


def test_metadata_paths_are_absolute(faces, tiny_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.onnx").write_bytes(tiny_model.read_bytes())
    (tmp_path / "data").symlink_to(faces)
    extract("data", "m.onnx", "e.parquet")
    meta = read_metadata(tmp_path / "e.parquet")
    assert meta["model"] == str(tmp_path / "m.onnx")
    assert meta["dataset"] == str(faces.resolve())
    assert meta["dataset_source"] == "image folder" and len(meta["label_space"]) == 64


def _two_sets(tmp_path, faces, names_a, names_b):
    roots = []
    for tag, names in (("A", names_a), ("B", names_b)):
        root = tmp_path / tag
        for name, src in names:
            (root / name).mkdir(parents=True)
            for p in sorted((faces / src).iterdir())[:3]:
                (root / name / p.name).write_bytes(p.read_bytes())
        roots.append(root)
    return roots


def test_independent_extractions_whose_labels_collide_are_refused(faces, tiny_model, tmp_path):
    a, b = _two_sets(
        tmp_path, faces, [("ann", "id_0000"), ("bob", "id_0001")], [("cat", "id_0002")]
    )
    extract(a, tiny_model, tmp_path / "a.parquet")
    extract(b, tiny_model, tmp_path / "b.parquet")
    with pytest.raises(
        FacecleanError, match=r"b\.parquet: label 0 is identity 'cat' here but 'ann'"
    ):
        open_stores([tmp_path / "a.parquet", tmp_path / "b.parquet"])
    with pytest.raises(FacecleanError, match=r"b\.parquet: label 0 is identity 'cat'"):
        class_sums([tmp_path / "a.parquet", tmp_path / "b.parquet"])
    extract(a, tiny_model, tmp_path / "a-flip.parquet", flip=True)
    with pytest.raises(
        FacecleanError, match=r"a-flip\.parquet: not from the same extraction .* flip"
    ):
        open_stores([tmp_path / "a.parquet", tmp_path / "a-flip.parquet"])


def test_shards_of_one_label_space_are_accepted(faces, tiny_model, tmp_path):
    # Split one list in two shards: both hold every identity, so the labels agree.
    lines = [f"{faces}/id_000{k}/0{i}.png {k}" for k in range(3) for i in range(3)]
    (tmp_path / "one.lst").write_text("\n".join(lines[0::2]) + "\n")
    (tmp_path / "two.lst").write_text("\n".join(lines[1::2]) + "\n")
    # a third shard with only identities 0 and 1: another label space, but the same meanings
    # (other images of theirs: the same image in two stores is refused, see
    # tests/test_fuzz_third_pass.py)
    others = [f"{faces}/id_000{k}/0{i}.png {k}" for k in range(2) for i in range(3, 6)]
    (tmp_path / "three.lst").write_text("\n".join(others) + "\n")
    for name in ("one", "two", "three"):
        extract(tmp_path / f"{name}.lst", tiny_model, tmp_path / f"{name}.parquet")
    shards = [tmp_path / f"{name}.parquet" for name in ("one", "two", "three")]
    assert len(open_stores(shards)) == 3
    # a shard of identities 1 and 2 alone numbers them 0 and 1: refused, not merged
    (tmp_path / "four.lst").write_text("\n".join(lines[3:]) + "\n")
    extract(tmp_path / "four.lst", tiny_model, tmp_path / "four.parquet")
    with pytest.raises(FacecleanError, match=r"four\.parquet: identity '1' has label 0 here"):
        open_stores([*shards, tmp_path / "four.parquet"])
