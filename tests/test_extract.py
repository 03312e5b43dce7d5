import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import SHARED_MODEL, SHARED_ORL, make_onnx, needs_shared, pooled_model, tensor
from onnx import helper, numpy_helper
from PIL import Image

from faceclean.cli import main
from faceclean.data.extraction import extract
from faceclean.data.onnx_model import FaceModel
from faceclean.data.store import iter_embeddings, read_metadata
from faceclean.demo import nearest_neighbour_accuracy
from faceclean.errors import FacecleanError


def arrays(table):
    emb = np.stack(table["embedding"].to_numpy(zero_copy_only=False)).astype(np.float32)
    return emb, table["label"].to_numpy()


def test_extract_writes_the_contract(faces, tiny_model, tmp_path):
    out = tmp_path / "emb.parquet"
    result = extract(faces, tiny_model, out)
    assert result.num_written == 48 and result.num_failed == 0 and result.num_resized == 0
    assert result.batch_mode == "dynamic"
    table = pq.read_table(out)
    assert table.column_names == ["path", "label", "identity", "embedding", "norm"]
    emb_type = table.schema.field("embedding").type
    assert emb_type.list_size == 64 and str(emb_type.value_type) == "float"
    emb, labels = arrays(table)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    assert (table["norm"].to_numpy() > 0).all()
    assert table["identity"][7].as_py() == "id_0001" and labels[7] == 1
    meta = read_metadata(out)
    assert meta["dim"] == 64 and meta["flip"] is False and len(meta["model_sha256"]) == 64
    assert meta["preprocessing"]["mean"] == [127.5, 127.5, 127.5]
    sims = emb @ emb.T
    same = labels[:, None] == labels[None]
    off = ~np.eye(len(labels), dtype=bool)
    assert sims[same & off].mean() > sims[~same].mean() + 0.03  # untrained net: common offset
    assert nearest_neighbour_accuracy(emb, labels) >= 0.9
    assert not (tmp_path / "emb.parquet.partial").exists()


def test_in_memory_table_equals_the_file(faces, tiny_model, tmp_path):
    result = extract(faces, tiny_model)
    assert result.output is None and result.table.num_rows == 48
    extract(faces, tiny_model, tmp_path / "e.parquet", chunk_size=7, batch_size=5)
    streamed = np.concatenate([b["embedding"] for b in iter_embeddings(tmp_path / "e.parquet")])
    assert np.allclose(arrays(result.table)[0], streamed, atol=1e-6)
    assert pq.ParquetFile(tmp_path / "e.parquet").num_row_groups == 7  # one per chunk


def test_float16_storage(faces, tiny_model, tmp_path):
    extract(faces, tiny_model, tmp_path / "h.parquet", dtype="float16")
    field = pq.read_schema(tmp_path / "h.parquet").field("embedding")
    assert str(field.type.value_type) == "halffloat"
    ref = arrays(extract(faces, tiny_model).table)[0]
    half = next(iter_embeddings(tmp_path / "h.parquet"))["embedding"]
    assert np.abs(half - ref).max() < 2e-3


def test_flip_adds_the_mirror_features(faces, tiny_model):
    table = extract(faces, tiny_model, flip=True).table
    model = FaceModel(tiny_model)
    img = np.asarray(Image.open(faces / "id_0000" / "00.png").convert("RGB"), np.float32)
    x = ((img - 127.5) / 127.5).transpose(2, 0, 1)[None].astype(np.float32)
    f = model.run(x) + model.run(np.ascontiguousarray(x[..., ::-1]))
    expect = f[0] / np.linalg.norm(f[0])
    assert np.allclose(arrays(table)[0][0], expect, atol=1e-5)


def test_fixed_batch_model_is_made_dynamic_with_identical_embeddings(
    faces, tiny_model, fixed_model
):
    result = extract(faces, fixed_model, preset="insightface", batch_size=16)
    assert result.batch_mode == "made-dynamic"
    ref = arrays(extract(faces, tiny_model).table)[0]
    assert np.abs(arrays(result.table)[0] - ref).max() < 1e-5


def test_extract_times_each_way_to_run_the_model_and_keeps_the_fastest(faces, fixed_model):
    """A fixed-batch-1 model that can be made dynamic: the first batch times it as shipped
    and made-dynamic at batch 1 and 8 (not 32 or 64: the batch holds 16); the fastest is
    kept and the embeddings do not depend on the choice."""
    # 48 images: too few for "auto" to spend time on it; asked for, it runs.
    assert extract(faces, fixed_model, preset="insightface", batch_size=16).batch_choice is None
    result = extract(faces, fixed_model, preset="insightface", batch_size=16, tune=True)
    names = [name for name, _ in result.batch_timings]
    assert sorted(names) == sorted(
        ["as shipped, batch 1", "made-dynamic, batch 1", "made-dynamic, batch 8"]
    )
    rates = [ips for _, ips in result.batch_timings]
    assert rates == sorted(rates, reverse=True) and all(r > 0 for r in rates)
    assert result.batch_choice == names[0]
    untuned = extract(faces, fixed_model, preset="insightface", batch_size=16, tune=False)
    assert untuned.batch_choice is None and untuned.batch_mode == "made-dynamic"
    assert np.abs(arrays(result.table)[0] - arrays(untuned.table)[0]).max() < 1e-5
    # Every configuration, forced, gives the same features.
    model = FaceModel(fixed_model)
    x = np.random.default_rng(0).standard_normal((10, 3, 112, 112)).astype(np.float32)
    ref = model.run(x)
    for _, sess, fixed, run in model.configurations(len(x)):
        model._sess, model.fixed_batch, model.run_batch = sess, fixed, run
        assert np.abs(model.run(x) - ref).max() < 1e-4


def test_graph_that_cannot_be_made_dynamic_runs_at_its_fixed_size(tmp_path, faces):
    # Flatten(axis=0) folds the batch into the features: a batch-dynamic rewrite cannot be
    # right, so faceclean must notice and run image by image.
    w = np.random.default_rng(0).standard_normal((3 * 112 * 112, 8)).astype(np.float32)
    path = make_onnx(
        tmp_path / "fold.onnx",
        [
            helper.make_node("Flatten", ["x"], ["f"], axis=0),
            helper.make_node("MatMul", ["f", "w"], ["y"]),
        ],
        [tensor("x", [1, 3, 112, 112])],
        [tensor("y", [1, 8])],
        [numpy_helper.from_array(w, "w")],
    )
    result = extract(faces, path, preset="insightface", batch_size=8)
    assert result.batch_mode == "fixed-1" and result.num_written == 48
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    img = np.asarray(Image.open(faces / "id_0000" / "00.png").convert("RGB"), np.float32)
    x = ((img - 127.5) / 127.5).transpose(2, 0, 1)[None].astype(np.float32)
    f = sess.run(None, {"x": x})[0][0]
    assert np.allclose(arrays(result.table)[0][0], f / np.linalg.norm(f), atol=1e-4)


def test_wrong_size_and_greyscale_images_are_fitted_and_counted(tmp_path, tiny_model):
    root = tmp_path / "set"
    (root / "a").mkdir(parents=True)
    Image.fromarray(np.full((90, 100), 128, np.uint8), "L").save(root / "a" / "grey.png")
    Image.fromarray(np.zeros((112, 112, 3), np.uint8)).save(root / "a" / "ok.png")
    for fit in ("resize", "pad"):
        result = extract(root, tiny_model, fit=fit)
        assert result.num_written == 2 and result.num_resized == 1
        assert result.preprocessing.fit == fit


def test_faulty_images_are_listed_and_skipped(faces, tiny_model, tmp_path):
    root = tmp_path / "set"
    (root / "a").mkdir(parents=True)
    good = (faces / "id_0000" / "00.png").read_bytes()
    (root / "a" / "good.png").write_bytes(good)
    (root / "a" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    (root / "a" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "a" / "unreadable.png").write_bytes(good)
    os.chmod(root / "a" / "unreadable.png", 0)
    lst = root / "train.lst"
    lst.write_text("a/good.png 0\na/missing.png 0\n")
    out = tmp_path / "e.parquet"
    result = extract(root, tiny_model, out)
    expected_bad = {"a/corrupt.jpg", "a/truncated.png"}
    if os.geteuid() != 0:  # root reads a chmod-0 file anyway
        expected_bad.add("a/unreadable.png")
    assert {f[0] for f in result.failures} == expected_bad
    assert result.num_written == 4 - len(expected_bad)
    lines = result.failures_path.read_text().splitlines()
    assert lines[0] == "path\tlabel\terror" and len(lines) == 1 + len(expected_bad)
    assert pq.read_table(out).num_rows == result.num_written
    result = extract(lst, tiny_model, tmp_path / "l.parquet")
    assert result.failures == [("a/missing.png", 0, result.failures[0][2])]
    assert "No such file" in result.failures[0][2]


def test_bad_models_are_named_errors(tmp_path, faces, tiny_model):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01 not a protobuf at all" * 10)
    with pytest.raises(FacecleanError, match=r"garbage\.onnx: not a valid ONNX model"):
        extract(faces, garbage, preset="insightface")
    grey = pooled_model(tmp_path / "grey.onnx", channels=1)
    with pytest.raises(
        FacecleanError, match=r"grey\.onnx: model input 'x' has shape \[1,1,112,112\]"
    ):
        extract(faces, grey, preset="insightface")
    with pytest.raises(FacecleanError, match=r"missing\.onnx: model file not found"):
        extract(faces, tmp_path / "missing.onnx", preset="insightface")
    nan = pooled_model(tmp_path / "nan.onnx", nan=True)
    with pytest.raises(FacecleanError, match=r"nan\.onnx: the model gave NaN/inf"):
        extract(faces, nan, tmp_path / "nan.parquet", preset="insightface")
    assert not (tmp_path / "nan.parquet").exists()


def test_preprocessing_is_never_guessed(faces, tiny_model, fixed_model):
    with pytest.raises(FacecleanError, match=r"tiny-fixed\.onnx: model records no preprocessing"):
        extract(faces, fixed_model)
    with pytest.raises(FacecleanError, match=r"tiny\.onnx: model records preprocessing mean"):
        extract(faces, tiny_model, preset="imagenet")
    with pytest.raises(FacecleanError, match="channels=RGB but BGR"):
        extract(faces, tiny_model, channels="BGR")
    assert extract(faces, tiny_model, preset="insightface").num_written == 48


def test_existing_output_is_not_replaced_without_overwrite(faces, tiny_model, tmp_path):
    out = tmp_path / "e.parquet"
    out.write_bytes(b"precious")
    with pytest.raises(FacecleanError, match="already exists"):
        extract(faces, tiny_model, out)
    assert out.read_bytes() == b"precious"
    extract(faces, tiny_model, out, overwrite=True)
    assert pq.read_table(out).num_rows == 48


def test_resume_skips_finished_chunks(faces, tiny_model, tmp_path):
    out = tmp_path / "e.parquet"

    def crash(chunk):
        if chunk == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract(faces, tiny_model, out, chunk_size=8, batch_size=4, on_chunk=crash)
    assert not out.exists()
    assert len(list((tmp_path / "e.parquet.partial").glob("part-*.parquet"))) == 3
    result = extract(faces, tiny_model, out, chunk_size=8, batch_size=4)
    assert result.num_resumed == 24 and result.num_written == 48
    full = extract(faces, tiny_model).table
    assert pq.read_table(out)["path"].to_pylist() == full["path"].to_pylist()
    assert np.abs(arrays(pq.read_table(out))[0] - arrays(full)[0]).max() < 1e-6


def test_resume_after_sigkill_gives_every_row_once(tmp_path, tiny_model):
    from faceclean.data.synthetic import make_face_folder

    data = make_face_folder(tmp_path / "big", identities=40, per_identity=30, seed=3)
    out = tmp_path / "e.parquet"
    cmd = [
        sys.executable,
        "-m",
        "faceclean.cli",
        "extract",
        str(data),
        "-m",
        str(tiny_model),
        "-o",
        str(out),
        "--chunk-size",
        "32",
        "--batch-size",
        "8",
        "--workers",
        "1",
        "-q",
    ]
    proc = subprocess.Popen(cmd)
    partial = tmp_path / "e.parquet.partial"
    deadline = time.time() + 60
    while time.time() < deadline and len(list(partial.glob("part-*.parquet"))) < 3:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "the run finished before it could be killed"
    done_before = len(list(partial.glob("part-*.parquet")))
    assert done_before >= 3
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    table = pq.read_table(out)
    paths = table["path"].to_pylist()
    assert len(paths) == len(set(paths)) == 1200
    assert paths == sorted(paths)
    ref = extract(data, tiny_model).table
    assert np.abs(arrays(table)[0] - arrays(ref)[0]).max() < 1e-6
    assert not partial.exists()


def test_cli_help_version_and_one_line_errors(faces, tiny_model, tmp_path):
    runner = CliRunner()
    assert "extract" in runner.invoke(main, ["--help"]).output
    assert "0.1.0" in runner.invoke(main, ["--version"]).output
    ok = runner.invoke(
        main, ["extract", str(faces), "-m", str(tiny_model), "-o", str(tmp_path / "e.parquet")]
    )
    assert ok.exit_code == 0, ok.output
    assert "written" in ok.output and "48" in ok.output
    bad = runner.invoke(
        main,
        [
            "extract",
            str(tmp_path / "nothing"),
            "-m",
            str(tiny_model),
            "-o",
            str(tmp_path / "x.parquet"),
        ],
    )
    assert bad.exit_code == 2
    assert bad.output.strip().count("\n") == 0 and "nothing: no such file" in bad.output


@needs_shared
def test_real_model_on_orl_faces_has_real_structure(tmp_path):
    out = tmp_path / "orl.parquet"
    result = extract(SHARED_ORL, SHARED_MODEL, out, preset="imagenet", fit="pad")
    assert result.num_written == 400 and result.batch_mode == "made-dynamic"
    assert result.num_resized == 400  # 92x112 images padded to 112x112
    batch = next(iter_embeddings(out, batch_rows=1000))
    emb, labels = batch["embedding"], batch["label"]
    assert nearest_neighbour_accuracy(emb, labels) >= 0.95
    sims = emb @ emb.T
    same = labels[:, None] == labels[None]
    off = ~np.eye(len(labels), dtype=bool)
    assert sims[same & off].mean() > sims[~same].mean() + 0.3
    assert json.loads(pq.read_schema(out).metadata[b"faceclean"])["model_sha256"]


def test_extract_from_an_insightface_rec_equals_the_folder(faces, tiny_model, tmp_path):
    from faceclean.data.recordio import write_face_rec

    items = [
        (k, p.read_bytes())
        for k, d in enumerate(sorted(faces.iterdir()))
        for p in sorted(d.iterdir())
    ]
    write_face_rec(tmp_path / "train.rec", items)
    from_rec = extract(tmp_path / "train.rec", tiny_model, tmp_path / "rec.parquet")
    assert from_rec.num_written == 48
    table = pq.read_table(tmp_path / "rec.parquet")
    assert table["path"][0].as_py() == "train.rec#1" and table["identity"][47].as_py() == "7"
    ref = extract(faces, tiny_model).table
    assert np.abs(arrays(table)[0] - arrays(ref)[0]).max() < 1e-6
    assert (arrays(table)[1] == arrays(ref)[1]).all()
