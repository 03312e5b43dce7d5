"""Training outputs: a crafted checkpoint or .bin never runs code, a half-trained run never
exports as if final, an existing run is resumed or (with --overwrite) replaced only when the
new one is complete, and every bad option is one line."""

from __future__ import annotations

import io
import json
import os
import pickle
from dataclasses import asdict

import numpy as np
import pytest
import torch
from helpers import lock_held, one_error_line, run
from PIL import Image

from faceclean.data.synthetic import make_face_folder
from faceclean.errors import FacecleanError
from faceclean.training.run import TrainConfig, build, load_run
from faceclean.training.verification import BIN_GLOBALS, load_bin


class Payload:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    return make_face_folder(tmp_path_factory.mktemp("t") / "faces", 4, 6, size=32, seed=0)


def fake_run(folder, faces, epoch=2, epochs=2, payload=None):
    """A run folder as `faceclean train` leaves it, without the training."""
    cfg = TrainConfig(
        clean_list=str(faces), input_size=32, embedding_size=8, width=0.25, depth=0.5,
        loss="softmax", epochs=epochs, batch_size=4, workers=0,
    )  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(asdict(cfg)))
    model, head = build(cfg, 4)
    state = {"model": model.state_dict(), "head": head.state_dict(), "num_classes": 4}
    state.update(epoch=epoch, step=epoch * 6)
    if payload is not None:
        state["extra"] = payload
    torch.save(state, folder / "checkpoint.pt")
    return folder


def test_a_crafted_checkpoint_never_runs_its_payload(tmp_path, faces):
    marker = tmp_path / "pwned"
    bad = fake_run(tmp_path / "bad", faces, payload=Payload(marker))
    with pytest.raises(FacecleanError, match=r"checkpoint\.pt: cannot load the checkpoint safely"):
        load_run(bad)
    one_error_line(run("export", bad, "-o", tmp_path / "m.onnx"), "checkpoint.pt", "safely")
    one_error_line(run("eval", bad, "--val", faces), "checkpoint.pt")
    from faceclean.training.teacher import TeacherFilter

    with pytest.raises(FacecleanError, match="cannot load the checkpoint safely"):
        TeacherFilter(bad, 2, 4, 32, torch.device("cpu"))
    assert not marker.exists() and not (tmp_path / "m.onnx").exists()
    # the same run without the payload loads: weights_only is no obstacle to real runs
    good, cfg = load_run(fake_run(tmp_path / "good", faces))
    assert cfg.embedding_size == 8 and not good.training


def _bin_bytes(payload, protocol):
    buf = io.BytesIO()
    pickle.dump(payload, buf, protocol=protocol)
    return buf.getvalue()


def test_a_crafted_bin_is_refused_and_real_ones_load(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "lfw.bin"
    bad.write_bytes(_bin_bytes(([b"a", b"b"], [Payload(marker)]), 4))
    with pytest.raises(
        FacecleanError, match=r"lfw\.bin: refused: the \.bin asks to load posix\.system"
    ):
        load_bin(bad)
    assert not marker.exists()
    # Real .bin files: Python 2 str images (read back as bytes), Python 3 bytes at protocol
    # 2 (through _codecs.encode) and 4, NumPy uint8 image buffers, NumPy bool flags.
    png = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(png, format="PNG")
    img = png.getvalue()
    variants = {
        "py3-protocol2": _bin_bytes(([img] * 4, [True, False]), 2),
        "py3-protocol4": _bin_bytes(([img] * 4, [True, False]), 4),
        "numpy": _bin_bytes(([np.frombuffer(img, np.uint8)] * 4, np.array([True, False])), 2),
        "numpy-scalars": _bin_bytes(([img] * 4, list(np.array([True, False]))), 4),
        # protocol 2 as Python 2 wrote it: SHORT_BINSTRING images, NEWTRUE/NEWFALSE flags
        "py2": b"\x80\x02(]q\x00("
        + b"".join(b"T" + len(img).to_bytes(4, "little") + img for _ in range(4))
        + b"e]q\x01(\x88\x89et.",
    }
    for name, data in variants.items():
        path = tmp_path / f"{name}.bin"
        path.write_bytes(data)
        images, issame = load_bin(path)
        assert images == [img] * 4 and issame.tolist() == [True, False], name
    assert ("numpy", "ndarray") in BIN_GLOBALS and not any("mxnet" in m for m, _ in BIN_GLOBALS)


def test_export_refuses_unfinished_runs_inputs_and_existing_outputs(tmp_path, faces):
    half = fake_run(tmp_path / "half", faces, epoch=1, epochs=3)
    one_error_line(run("export", half, "-o", tmp_path / "m.onnx"), "stopped at epoch 1 of 3")
    assert not (tmp_path / "m.onnx").exists()
    assert run("export", half, "-o", tmp_path / "m.onnx", "--unfinished").exit_code == 0
    one_error_line(run("export", half, "-o", tmp_path / "m.onnx", "--unfinished"), "--overwrite")
    ckpt = half / "checkpoint.pt"
    before = ckpt.read_bytes()
    one_error_line(
        run("export", half, "-o", ckpt, "--overwrite", "--unfinished"), "is also an input"
    )
    assert ckpt.read_bytes() == before
    one_error_line(run("eval", half, "--val", faces), "stopped at epoch 1 of 3")


def test_train_overwrite_keeps_the_old_run_until_the_new_one_is_complete(tmp_path, faces):
    old = fake_run(tmp_path / "run", faces)
    files = {p.name: p.read_bytes() for p in old.iterdir()}
    empty = tmp_path / "empty.lst"
    empty.write_text(f"{faces}/id_0000/00.png 0\n")  # one image: less than one batch
    r = run("train", empty, "-o", old, "--overwrite", "--workers", "0", "--input-size", "32")
    assert r.exit_code == 2, r.output
    assert {p.name: p.read_bytes() for p in old.iterdir()} == files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.lst", "run"]
    # a folder that is not a run is not taken over without --overwrite
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    one_error_line(run("train", faces, "-o", other), "not a run to resume", "--overwrite")
    one_error_line(run("train", faces, "-o", faces.parent), "holds the input")
    assert (other / "keep.txt").read_text() == "mine"


def test_a_second_trainer_on_one_run_folder_is_refused(tmp_path, faces):
    out = tmp_path / "run"
    with lock_held(out) as holder:
        one_error_line(run("train", faces, "-o", out), f"PID {holder.pid}")
    assert not (out / "config.json").exists()


@pytest.mark.parametrize(
    "option, value",
    [
        ("--batch-size", "0"),
        ("--batch-size", "1"),
        ("--embedding-size", "0"),
        ("--lr", "-1"),
        ("--lr", "nan"),
        ("--width", "0"),
        ("--depth", "-1"),
        ("--epochs", "0"),
        ("--max-steps", "0"),
        ("--sample-rate", "0"),
        ("--sample-rate", "1.5"),
        ("--teacher-topk", "0"),
        ("--warmup-epochs", "-1"),
        ("--workers", "-1"),
        ("--seed", "-2"),
        ("--input-size", "0"),
        ("--s-p", "0"),
        ("--m1", "inf"),
    ],
)
def test_bad_train_options_are_one_line_errors(tmp_path, faces, option, value):
    r = run("train", faces, "-o", tmp_path / "run", option, value)
    assert r.exit_code == 2 and "Traceback" not in r.output
    errors = [line for line in r.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and option in errors[0], r.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["s=NaN", "m=Infinity", "s=abc", "s"])
def test_bad_loss_args_are_one_line_errors(tmp_path, faces, value):
    r = run("train", faces, "-o", tmp_path / "run", "--loss", "arcface", "--loss-arg", value)
    assert r.exit_code == 2 and "Traceback" not in r.output
    errors = [line for line in r.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "--loss-arg" in errors[0], r.output
    assert not (tmp_path / "run").exists()


def test_bad_eval_far_is_a_one_line_error(tmp_path, faces):
    r = run("eval", fake_run(tmp_path / "run", faces), "--val", faces, "--far", "2")
    assert r.exit_code == 2 and "'--far'" in r.output and "Traceback" not in r.output


def tiny_config(train_list, **kw):
    base = dict(
        clean_list=str(train_list), input_size=32, embedding_size=8, width=0.25, depth=0.5,
        loss="softmax", epochs=3, batch_size=6, lr=0.05, workers=0,
    )  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


def test_metrics_never_hold_an_epoch_twice(tmp_path, faces):
    from faceclean.training.run import read_metrics
    from faceclean.training.train import train

    cfg = tiny_config(faces)
    train(cfg, tmp_path / "a")
    train(cfg, tmp_path / "b", stop_after_epochs=1)
    metrics = tmp_path / "b" / "metrics.jsonl"
    # a kill after epoch 2's line was written, before its checkpoint
    metrics.write_text(metrics.read_text() + json.dumps({"epoch": 2, "step": 99}) + "\n")
    assert [r["epoch"] for r in read_metrics(tmp_path / "b")] == [1, 2]
    train(cfg, tmp_path / "b")
    a, b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert [r["epoch"] for r in b] == [1, 2, 3]
    assert [(r["step"], r["loss"]) for r in a] == [(r["step"], r["loss"]) for r in b]


def test_fewer_images_than_a_batch_is_an_error(tmp_path, faces):
    lst = tmp_path / "few.lst"
    lst.write_text("".join(f"{faces}/id_000{k}/00.png {k}\n" for k in range(4)))
    r = run("train", lst, "-o", tmp_path / "run", "--batch-size", "8", "--input-size", "32")
    one_error_line(r, "few.lst", "4 image(s), fewer than one batch of 8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["few.lst"]
    missing = tmp_path / "missing.lst"
    missing.write_text("".join(f"gone/{i}.png {i % 2}\n" for i in range(20)))
    one_error_line(run("train", missing, "-o", tmp_path / "run"), "missing.lst", "missing")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["few.lst", "missing.lst"]


def test_a_corrupt_training_image_is_skipped_counted_and_limited(tmp_path, faces):
    import shutil

    from faceclean.training.run import read_metrics
    from faceclean.training.train import train

    data = tmp_path / "faces"
    shutil.copytree(faces, data)
    (data / "id_0002" / "03.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    cfg = tiny_config(data, epochs=1, workers=1)
    summary = train(cfg, tmp_path / "run", max_failures=0.1)
    assert summary["steps"] == 4
    skipped = (tmp_path / "run" / "skipped_images.tsv").read_text().splitlines()
    assert len(skipped) == 1 and skipped[0].startswith("id_0002/03.png\t")
    assert read_metrics(tmp_path / "run")[0]["skipped_images"] == 1
    with pytest.raises(
        FacecleanError,
        match=r"1 of 24 training images could not be read, "
        r"more than --max-failures 0; e\.g\. id_0002/03\.png",
    ):
        train(cfg, tmp_path / "strict", max_failures=0)
    assert not (tmp_path / "strict" / "checkpoint.pt").exists()


def test_a_bin_declaring_absurd_contents_is_one_error(tmp_path):
    """Each reached code that trusted it: a TypeError traceback, or five zero bytes read as
    an image."""
    cases = {
        "holds int and list": (5, [True]),
        "flags are not": ([b"a", b"b"], ["yes"]),
        "not bytes": ([b"a", 5], [True]),
        "flags are not all": ([b"a", b"b"], [2]),
        "holds str and list": ("ab", [True]),
    }
    for i, (message, payload) in enumerate(cases.items()):
        path = tmp_path / f"b{i}.bin"
        path.write_bytes(_bin_bytes(payload, 4))
        with pytest.raises(FacecleanError, match=f"b{i}.bin: .*{message}"):
            load_bin(path)
