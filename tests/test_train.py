import pickle

import numpy as np
import onnxruntime as ort
import pytest
import torch

from faceclean.data.datasets import open_dataset
from faceclean.data.extraction import extract
from faceclean.data.synthetic import make_face_folder
from faceclean.errors import FacecleanError
from faceclean.training.backbones import create_backbone
from faceclean.training.dataset import FaceImages
from faceclean.training.export import export_onnx
from faceclean.training.run import TrainConfig, build, load_run, spec_for
from faceclean.training.train import (
    embed_images,
    evaluate_run,
    evaluate_run_bin,
    train,
)
from faceclean.training.verification import evaluate_embeddings, kfold_accuracy, tar_at_far


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    return (
        make_face_folder(root / "train", 30, 12, size=56, seed=0),
        make_face_folder(root / "val", 20, 6, size=56, seed=99),
    )


def config(train_dir, **kw):
    base = dict(
        clean_list=str(train_dir),
        input_size=56,
        embedding_size=64,
        width=0.5,
        depth=0.5,
        loss="arcface",
        loss_kwargs={"s": 32, "m": 0.3},
        epochs=4,
        batch_size=32,
        lr=0.1,
        warmup_epochs=1,
        workers=0,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_short_training_improves_tar_over_the_untrained_network(sets, tmp_path):
    train_dir, val_dir = sets
    cfg = config(train_dir)
    torch.manual_seed(cfg.seed)
    untrained, _ = build(cfg, 30)
    ds = open_dataset(val_dir)
    images = FaceImages(ds.paths.to_pylist(), ds.labels, ds.root, spec_for(cfg), False)
    before = evaluate_embeddings(embed_images(untrained, images, flip=True), ds.labels, (1e-2,))
    summary = train(cfg, tmp_path / "run")
    assert summary["steps"] == 4 * (360 // 32)
    after = evaluate_run(tmp_path / "run", val_dir, (1e-2,))
    assert after["tar@far=0.01"] > before["tar@far=0.01"] + 0.2
    # Scoring with loader workers (as training used them) gives the same numbers.
    assert evaluate_run(tmp_path / "run", val_dir, (1e-2,), workers=2) == after
    losses = [
        float(line.split('"loss": ')[1].split(",")[0])
        for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert losses[-1] < losses[0] / 2


def test_resume_gives_the_same_model(sets, tmp_path):
    train_dir, _ = sets
    cfg = config(train_dir, epochs=3, loss="unified", loss_kwargs={"s_p": 30, "s_n": 32})
    train(cfg, tmp_path / "a")
    train(cfg, tmp_path / "b", stop_after_epochs=1)
    assert load_run(tmp_path / "b")  # a checkpoint after one epoch
    train(cfg, tmp_path / "b")
    a, _ = load_run(tmp_path / "a")
    b, _ = load_run(tmp_path / "b")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    with pytest.raises(FacecleanError, match=r"another configuration \(epochs, loss, loss_kwargs"):
        train(config(train_dir, epochs=5), tmp_path / "a")


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    return make_face_folder(tmp_path_factory.mktemp("small"), 8, 6, size=56, seed=3)


@pytest.mark.slow  # ~5 s of CPU per head
@pytest.mark.parametrize(
    ("loss", "kwargs", "rate"),
    [
        ("unified", {"s_p": 30, "s_n": 32}, 0.5),  # Partial FC: its sampling must resume
        ("arcface", {"s": 32}, 1.0),
        ("cosface", {"s": 32}, 1.0),
        ("sphereface", {"s": 32}, 1.0),
        ("softmax", {"s": 32}, 1.0),
        ("adaface", {"s": 32}, 1.0),
        ("npcface", {"s": 32}, 1.0),
        ("mv-softmax", {}, 1.0),
        ("search-softmax", {"s": 32, "random": True, "seed": 4}, 0.9),  # a drawn per epoch
        ("linear", {"s": 32}, 1.0),
    ],
)
def test_resume_equals_an_uninterrupted_run_for_every_head(small_set, tmp_path, loss, kwargs, rate):
    cfg = config(
        small_set,
        loss=loss,
        loss_kwargs=kwargs,
        sample_rate=rate,
        epochs=2,
        batch_size=12,
        width=0.25,
        embedding_size=16,
        input_size=32,  # tiny and fast: what is tested is the state, not the accuracy
    )
    train(cfg, tmp_path / "a")
    train(cfg, tmp_path / "b", stop_after_epochs=1)
    train(cfg, tmp_path / "b")
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)  # no pickled objects
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"]) == (2, 8)
    for part in ("model", "head"):
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), (part, key)
    assert torch.equal(
        a["optimiser"]["state"][0]["momentum_buffer"], b["optimiser"]["state"][0]["momentum_buffer"]
    )
    if rate < 1:
        assert a["head"]["draws"].item() == 8  # one Partial FC draw per step, resumed
    if loss == "search-softmax":
        assert -5.0 <= a["head"]["a_value"].item() < 0


def test_export_parity_and_extract_reads_it_without_flags(sets, tmp_path):
    train_dir, val_dir = sets
    train(config(train_dir, epochs=1), tmp_path / "run")
    onnx_path = export_onnx(tmp_path / "run", tmp_path / "m.onnx")
    model, cfg = load_run(tmp_path / "run")
    x = torch.randn(5, 3, 56, 56)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"data": x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() > 0.9999
    result = extract(val_dir, onnx_path)  # preprocessing comes from the model
    assert result.batch_mode == "dynamic" and result.num_written == 120


def test_bad_training_input(sets, tmp_path):
    train_dir, _ = sets
    (tmp_path / "empty.lst").write_text("\n")
    with pytest.raises(FacecleanError, match="clean list is empty"):
        train(config(tmp_path / "empty.lst"), tmp_path / "r1")
    img = next(train_dir.glob("*/*.png"))
    (tmp_path / "neg.lst").write_text(f"{img} 0\n{img} -1\n")
    with pytest.raises(FacecleanError, match="label -1 is negative"):
        train(config(tmp_path / "neg.lst"), tmp_path / "r2")
    (tmp_path / "missing.lst").write_text(f"{img} 0\n{tmp_path}/nope.png 1\n")
    with pytest.raises(FacecleanError, match=r"1 image\(s\) of the list are missing, e.g. .*nope"):
        train(config(tmp_path / "missing.lst"), tmp_path / "r3")
    with pytest.raises(FacecleanError, match="width 5.0 is outside"):
        train(config(train_dir, width=5.0), tmp_path / "r4")
    with pytest.raises(FacecleanError, match="non-monotonic"):
        train(config(train_dir, loss="unified", loss_kwargs={"m1": -1.0}), tmp_path / "r5")


def test_tar_at_far_interpolates_on_the_roc_and_flags_unresolved():
    genuine = np.array([0.9, 0.8, 0.7, 0.2])
    impostor = np.linspace(0, 0.75, 1000)  # one impostor above 0.7495...: FAR steps of 1e-3
    tars = tar_at_far(genuine, impostor, (1e-3, 1e-2, 0.1, 1e-4))
    assert tars[1e-3] == (0.5, True)  # 0.9 and 0.8 beat every impostor
    assert tars[1e-2] == (0.5, True)  # 0.7 needs FAR 0.066 (66 impostors above it)
    assert tars[0.1] == (0.75, True)
    assert tars[1e-4] == (0.5, False)  # 1000 impostors cannot resolve 1e-4
    assert (
        kfold_accuracy(
            np.r_[np.ones(50), np.zeros(50)], np.r_[np.ones(50), np.zeros(50)].astype(bool)
        )[0]
        == 1.0
    )
    # Fewer pairs than folds: one fold per pair, not empty folds and a NaN mean.
    acc, std = kfold_accuracy(np.array([0.9, 0.1, 0.8, 0.2]), np.array([1, 0, 1, 0], bool))
    assert np.isfinite(acc) and np.isfinite(std) and 0 <= acc <= 1


def test_bin_pair_file_accuracy(sets, tmp_path):
    train_dir, val_dir = sets
    train(config(train_dir, epochs=1), tmp_path / "run")
    ids = sorted(val_dir.iterdir())
    bins, issame = [], []
    for k in range(10):
        a, b = sorted(ids[k].iterdir())[:2]
        bins += [a.read_bytes(), b.read_bytes()]
        issame.append(True)
        bins += [a.read_bytes(), sorted(ids[k + 10].iterdir())[0].read_bytes()]
        issame.append(False)
    with open(tmp_path / "toy.bin", "wb") as f:
        pickle.dump((bins, issame), f)
    r = evaluate_run_bin(tmp_path / "run", tmp_path / "toy.bin")
    assert r["pairs"] == 20 and 0.5 <= r["accuracy"] <= 1.0
    assert (r["genuine"], r["impostor"]) == (10, 10)
    with open(tmp_path / "genuine.bin", "wb") as f:
        pickle.dump((bins[:2], issame[:1]), f)
    one_sided = evaluate_run_bin(tmp_path / "run", tmp_path / "genuine.bin")
    assert one_sided["accuracy"] is None and one_sided["impostor"] == 0
    (tmp_path / "bad.bin").write_bytes(b"garbage")
    with pytest.raises(FacecleanError, match=r"bad\.bin: not an InsightFace \.bin"):
        evaluate_run_bin(tmp_path / "run", tmp_path / "bad.bin")


def test_iresnet_trains_one_step(sets, tmp_path):
    train_dir, _ = sets
    s = train(
        config(train_dir, backbone="iresnet18", width=0.25, depth=0.5, max_steps=1, epochs=1),
        tmp_path / "r",
    )
    assert s["steps"] == 1
    assert create_backbone("iresnet18", width=0.25, input_size=56)(
        torch.zeros(2, 3, 56, 56)
    ).shape == (2, 512)


def test_torchrun_ddp_on_cpu(sets, tmp_path):
    import json
    import subprocess
    import sys

    train_dir, _ = sets
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29531",
        "-m",
        "faceclean.cli",
        "train",
        str(train_dir),
        "--input-size",
        "56",
        "--embedding-size",
        "32",
        "--width",
        "0.25",
        "--depth",
        "0.5",
        "--loss",
        "arcface",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--workers",
        "0",
        "--device",
        "cpu",
        "-o",
        str(tmp_path / "ddp"),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    # 360 images, 2 processes x 16 per step: 11 steps per epoch, written once (rank 0).
    assert [r["step"] for r in lines] == [11, 22]
    assert lines[-1]["lr"] < 0.01  # the schedule ran to its end


def test_teacher_topk_filter_rejects_flipped_labels(sets, tmp_path):
    import json

    from faceclean.training.teacher import TeacherFilter

    train_dir, _ = sets
    train(config(train_dir, epochs=6), tmp_path / "teacher")
    cfg = config(train_dir)
    ds = open_dataset(train_dir)
    images = FaceImages(ds.paths.to_pylist(), ds.labels, ds.root, spec_for(cfg), False)
    x = torch.stack([images[i][0] for i in range(0, 360, 6)])  # 60 images, 2 per identity
    y = torch.as_tensor(ds.labels[0:360:6])
    flipped = (y + 7) % 30
    teacher = TeacherFilter(tmp_path / "teacher", 1, 30, 56, torch.device("cpu"))
    assert teacher.mask(x, y).float().mean() > 0.8
    assert teacher.mask(x, flipped).float().mean() < 0.2
    # A list with 20% flipped labels, trained with the teacher: the log says how many passed.
    lines = [
        f"{p} {lab if i % 5 else (lab + 7) % 30}"
        for i, (p, lab) in enumerate(zip(ds.paths.to_pylist(), ds.labels, strict=True))
    ]
    (train_dir.parent / "noisy.lst").write_text("\n".join(lines) + "\n")
    student = config(
        train_dir.parent / "noisy.lst",
        data_root=str(train_dir),
        epochs=1,
        teacher=str(tmp_path / "teacher"),
        teacher_topk=1,
    )
    train(student, tmp_path / "student")
    record = json.loads((tmp_path / "student" / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0.6 < record["teacher_kept"] < 0.9  # ~80% clean labels pass, flips do not
    with pytest.raises(FacecleanError, match="teacher has 30 classes"):
        TeacherFilter(tmp_path / "teacher", 1, 31, 56, torch.device("cpu"))


def test_list_grid_prints_the_macs_of_every_grid_point(monkeypatch):
    from click.testing import CliRunner

    from faceclean.cli import main
    from faceclean.search import space

    small = {**space.DEFAULT_CHOICES, "width": [0.84, 1.0], "depth": [1.0, 1.06, 1.47]}
    monkeypatch.setattr(space, "DEFAULT_CHOICES", small)
    result = CliRunner().invoke(main, ["train", "--list-grid"])  # no list, no -o needed
    assert result.exit_code == 0, result.output
    rows = result.output.splitlines()[2:]
    assert len(rows) == 3 and rows[0].split()[1] == "5+1+6+1+2"
    assert rows[0].split()[-1] == "221.2"  # the base MobileFaceNet (W = D = 1)
    assert len({r.split()[1] for r in rows}) == 3  # three distinct networks


@pytest.mark.slow  # four copy-epochs of training and scoring
def test_search_softmax_mode_trains_copies_and_keeps_the_best(sets, tmp_path):
    import json

    from click.testing import CliRunner

    from faceclean.cli import main

    train_dir, val_dir = sets
    args = ["train", str(train_dir), "--input-size", "32", "--embedding-size", "16"]
    args += ["--width", "0.25", "--depth", "0.5", "--batch-size", "32", "--workers", "0"]
    args += ["--loss", "search-softmax", "--loss-arg", "s=32", "--search-copies", "2"]
    args += ["--epochs", "2", "--val", str(val_dir), "-o", str(tmp_path / "run")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    log = [json.loads(x) for x in (tmp_path / "run" / "search_softmax.jsonl").open()]
    assert [(r["epoch"], r["copy"]) for r in log] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert all(-5 <= r["a"] <= 0 and 0 <= r["reward"] <= 1 for r in log)
    best = max(log[2:], key=lambda r: r["reward"])
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert saved["epoch"] == 2 and saved["head"]["a_value"].item() == pytest.approx(best["a"])
    assert not (tmp_path / "run" / "copies").exists()
    assert load_run(tmp_path / "run")[1].loss_kwargs["a"] == pytest.approx(best["a"])
    bad = CliRunner().invoke(main, args[:-4] + ["-o", str(tmp_path / "r2")])
    assert bad.exit_code == 2 and "--search-copies needs --val" in bad.output


def test_a_clean_list_reads_its_images_from_the_recorded_dataset(faces, tiny_model, tmp_path):
    # `faceclean train cleaned/clean.parquet` after `faceclean clean` needs no --data.
    from faceclean.cleaning.clean import clean
    from faceclean.training.dataset import read_clean_list

    emb = tmp_path / "e.parquet"
    extract(faces, tiny_model, emb, progress=False)
    cleaned = clean(emb, tmp_path / "cleaned", 0.0, 0.99)
    paths, _, root = read_clean_list(cleaned.outputs["clean"])
    assert root.resolve() == faces.resolve()
    assert all((root / p).is_file() for p in paths)
    other = tmp_path / "elsewhere"
    other.mkdir()
    assert read_clean_list(cleaned.outputs["clean"], other)[2] == other  # --data wins
