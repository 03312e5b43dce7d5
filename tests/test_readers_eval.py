"""Scoring any ONNX model (``faceclean eval MODEL.onnx``) with extract's preprocessing."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from faceclean.data.embed import embed_bytes
from faceclean.data.extraction import extract
from faceclean.data.onnx_model import FaceModel
from faceclean.errors import FacecleanError
from faceclean.training.evaluate_model import evaluate_onnx

FIXTURES = Path(__file__).parent / "fixtures"


def _bin(path, faces, pairs):
    images = {k: sorted((faces / f"id_000{k}").iterdir()) for k in range(8)}
    bins, issame = [], []
    for (ka, ia), (kb, ib) in pairs:
        bins += [images[ka][ia].read_bytes(), images[kb][ib].read_bytes()]
        issame.append(ka == kb)
    with open(path, "wb") as f:
        pickle.dump((bins, issame), f, protocol=4)
    return path


def test_bin_embeddings_equal_extract(faces, tiny_model, tmp_path):
    fm = FaceModel(tiny_model)
    table = extract(faces, fm, flip=True).table
    spec = extract(faces, fm).preprocessing
    paths = [faces / p for p in table["path"].to_pylist()[:10]]
    got = embed_bytes(fm, [p.read_bytes() for p in paths], spec, flip=True, batch_size=3)
    want = np.stack(table["embedding"].to_numpy(zero_copy_only=False)[:10])
    assert np.abs(got - want).max() < 1e-6


def test_evaluate_any_onnx_model_on_val_and_bins(faces, tiny_model, tmp_path, capsys):
    pairs = [((k, 0), (k, 1)) for k in range(8)] + [((k, 2), ((k + 1) % 8, 3)) for k in range(8)]
    both = _bin(tmp_path / "both.bin", faces, pairs)
    genuine_only = _bin(tmp_path / "genuine.bin", faces, pairs[:8])
    rows = evaluate_onnx(
        tiny_model, faces, [both, genuine_only, FIXTURES / "verification.bin"], (1e-2,)
    )
    assert rows["val images"] == "48 (0 failed)"
    assert rows["genuine_pairs"] == 8 * 15 and 0 < rows["tar@far=0.01"] <= 1
    acc = rows["both.bin accuracy"]
    assert acc.endswith("(8+8 pairs)") and 0.5 <= float(acc.split()[0]) <= 1
    assert rows["genuine.bin accuracy"] == "n/a (no impostor pairs)"
    assert "genuine.bin: no impostor pairs (8 genuine, 0 impostor)" in capsys.readouterr().err
    fixture_acc = rows["verification.bin accuracy"]
    assert fixture_acc.endswith("(3+3 pairs)") and 0 <= float(fixture_acc.split()[0]) <= 1


def test_bin_with_an_undecodable_image_names_it(faces, tiny_model, tmp_path):
    path = _bin(tmp_path / "bad.bin", faces, [((0, 0), (0, 1)), ((0, 2), (1, 0))])
    with open(path, "rb") as f:
        bins, issame = pickle.load(f)
    bins[3] = b"not an image"
    with open(path, "wb") as f:
        pickle.dump((bins, issame), f)
    with pytest.raises(FacecleanError, match=r"bad\.bin: image 3: not an image"):
        evaluate_onnx(tiny_model, None, [path], (1e-2,))


def test_model_without_preprocessing_needs_the_flags(faces, fixed_model):
    with pytest.raises(FacecleanError, match="model records no preprocessing"):
        evaluate_onnx(fixed_model, faces, [], (1e-2,))
    rows = evaluate_onnx(fixed_model, faces, [], (1e-2,), preset="insightface")
    assert rows["val images"] == "48 (0 failed)"


def test_cli_eval_of_an_onnx_model(faces, tiny_model, fixed_model, tmp_path):
    from click.testing import CliRunner

    from faceclean.cli import main

    pairs = [((k, 0), (k, 1)) for k in range(4)] + [((k, 2), (k + 4, 3)) for k in range(4)]
    b = _bin(tmp_path / "p.bin", faces, pairs)
    run = CliRunner().invoke
    res = run(main, ["eval", str(tiny_model), "--bin", str(b), "--val", str(faces)])
    assert res.exit_code == 0, res.output
    assert "p.bin accuracy" in res.output and "(4+4 pairs)" in res.output
    assert "tar@far=0.001" in res.output
    # a model without recorded preprocessing takes extract's flags
    res = run(main, ["eval", str(fixed_model), "--bin", str(b)])
    assert res.exit_code == 2 and "model records no preprocessing" in res.output
    res = run(main, ["eval", str(fixed_model), "--bin", str(b), "--preset", "insightface"])
    assert res.exit_code == 0, res.output
    res = run(main, ["eval", str(fixed_model), "--bin", str(b), "--std", "0"])
    assert res.exit_code == 2 and "std values must be positive" in res.output
