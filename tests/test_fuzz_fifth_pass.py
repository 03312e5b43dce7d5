"""Defects of the fifth fuzzing pass (issue 22). Each test fails on the code before its fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import one_error_line

from faceclean.cli import main
from faceclean.data.synthetic import clustered_embeddings, write_embedding_store
from faceclean.errors import FacecleanError
from faceclean.search.embedding_trial import EmbeddingHeadTrial
from faceclean.search.space import BASELINE, load_space


def _stores(tmp_path):
    x, y = clustered_embeddings(12, 8, 32, seed=1)
    vx, vy = clustered_embeddings(6, 6, 32, seed=2)
    return (
        write_embedding_store(tmp_path / "train.parquet", x, y),
        write_embedding_store(tmp_path / "val.parquet", vx, vy),
    )


@pytest.mark.parametrize("tau", ["auto", 0.2])
def test_an_embedding_head_trial_logs_the_tau_intra_its_cleaning_applied(tmp_path, tau):
    """Head trials logged no tau_intra_chosen: an "auto" trial's chosen value (and so its
    data difficulty) was lost, though every trial is documented to have one."""
    train, val = _stores(tmp_path)
    t = EmbeddingHeadTrial(str(train), str(val), str(tmp_path / "w"), (1e-2,), steps=3)
    out = t(dict(BASELINE, tau_intra=tau, tau_inter=0.9), 0)
    assert isinstance(out["tau_intra_chosen"], float)
    if tau == "auto":
        assert out["tau_intra_reason"]  # why the data chose it
    else:
        assert out["tau_intra_chosen"] == 0.2 and out["tau_intra_reason"] is None


def test_cli_search_with_auto_head_trials_has_a_data_difficulty_for_each(tmp_path):
    import json

    train, val = _stores(tmp_path)
    space = tmp_path / "s.toml"
    space.write_text('[tokens]\ntau_intra = ["auto"]\n')
    args = ["search", str(train), "--val-store", str(val), "-o", str(tmp_path / "s")]
    args += ["--trial", "embedding-head", "--steps", "1", "--batch", "2", "--head-steps", "3"]
    args += ["--signal-seeds", "0", "--method", "random", "--space-file", str(space)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    lines = (tmp_path / "s" / "trials.jsonl").read_text().splitlines()
    trials = [json.loads(x) for x in lines if x.strip()]
    assert len(trials) == 2
    assert all(t["tau_intra_chosen"] is not None and t["data_difficulty"] is not None
               for t in trials)  # fmt: skip


@pytest.mark.parametrize(
    "content, needle",
    [
        ("tokens = 3\n", "must be a table"),
        ("[[tokens]]\nm1 = [1.0]\n", "must be a table"),
        (b"\x00\xff\xfe\x01garbage", "not a UTF-8"),
        ("[tokens]\nm1 = [1.1]\n".encode("utf-16"), "not a UTF-8"),
    ],
)
def test_a_space_file_that_is_no_table_or_not_utf8_is_refused_naming_it(tmp_path, content, needle):
    """`tokens = 3`, `[[tokens]]` (TypeError) and binary/UTF-16 files (UnicodeDecodeError)
    reached code that trusted them: tracebacks."""
    path = tmp_path / "space.toml"
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    with pytest.raises(FacecleanError, match=needle) as e:
        load_space(path)
    assert "space.toml" in str(e.value)


def test_a_space_file_that_is_a_folder_is_one_line_on_the_cli(tmp_path):
    train, val = _stores(tmp_path)
    (tmp_path / "space.toml").mkdir()
    args = ["search", str(train), "--val-store", str(val), "-o", str(tmp_path / "s")]
    args += ["--trial", "embedding-head", "--space-file", str(tmp_path / "space.toml")]
    res = CliRunner().invoke(main, args)
    one_error_line(res, "is a folder")


@pytest.mark.parametrize("kind", ["other dimension", "one identity"])
def test_a_validation_store_every_head_trial_would_fail_on_is_refused_before_any(tmp_path, kind):
    """Each trial failed on it, the search printed its table and ran every trial first."""
    train, _ = _stores(tmp_path)
    vx, vy = clustered_embeddings(4, 4, 64 if kind == "other dimension" else 32, seed=5)
    val = write_embedding_store(
        tmp_path / "v.parquet", vx, vy if kind != "one identity" else 0 * vy
    )
    args = ["search", str(train), "--val-store", str(val), "-o", str(tmp_path / "s")]
    args += ["--trial", "embedding-head", "--steps", "1", "--batch", "2", "--head-steps", "3"]
    res = CliRunner().invoke(main, [*args, "--signal-seeds", "0", "--method", "random"])
    line = one_error_line(res, "v.parquet")
    assert res.output.strip() == line  # nothing else: no table of failed trials
    assert not (tmp_path / "s" / "trials.jsonl").exists()


@pytest.mark.parametrize("kind", ["label far beyond the rows", "too many proxy identities"])
def test_a_training_store_every_trial_would_fail_on_is_refused_before_any(tmp_path, kind):
    """Every trial failed on it (cleaning refuses the store; more --trial-identities than
    identities): the search printed a table of failed trials before its error."""
    train, val = _stores(tmp_path)
    extra = []
    if kind == "label far beyond the rows":
        x, y = clustered_embeddings(12, 8, 32, seed=1)
        train = write_embedding_store(tmp_path / "t.parquet", x, np.where(y == 0, 10**6, y))
    else:
        extra = ["--trial-identities", "500"]
    args = ["search", str(train), "--val-store", str(val), "-o", str(tmp_path / "s"), *extra]
    args += ["--trial", "embedding-head", "--steps", "1", "--batch", "2", "--head-steps", "3"]
    res = CliRunner().invoke(main, [*args, "--signal-seeds", "0", "--method", "random"])
    line = one_error_line(res, Path(train).name)
    assert res.output.strip() == line
    assert not (tmp_path / "s" / "trials.jsonl").exists()


def test_a_mismatched_resume_is_one_line_before_the_status_table(tmp_path):
    """A resume with another --batch printed the search's status table, then the error."""
    train, val = _stores(tmp_path)
    args = ["search", str(train), "--val-store", str(val), "-o", str(tmp_path / "s")]
    args += ["--trial", "embedding-head", "--steps", "1", "--head-steps", "3"]
    args += ["--signal-seeds", "0", "--method", "random"]
    assert CliRunner().invoke(main, [*args, "--batch", "2"]).exit_code == 0
    res = CliRunner().invoke(main, [*args, "--batch", "3", "--resume"])
    line = one_error_line(res, "--batch 2")
    assert res.output.strip() == line


@pytest.mark.parametrize(
    "config, needle",
    [
        ([], "unreadable config.json (a JSON list"),
        ({"clean_list": "x", "epochs": "x"}, "epochs 'x'"),
        ({"clean_list": "x", "epochs": None}, "epochs None"),
        ({"clean_list": "x", "embedding_size": -3}, "embedding_size -3"),
        ({"clean_list": "x", "input_size": 1e9}, "input_size"),
        ({"clean_list": "x", "width": 1e9}, "width"),
        ({"clean_list": "x", "max_steps": "y"}, "max_steps 'y'"),
        ({"clean_list": "x", "preset": [3]}, "preset [3]"),
    ],
)
def test_a_run_whose_config_json_declares_absurd_values_is_refused_naming_it(
    tmp_path, config, needle
):
    """A config.json that parsed but was a list, or held a value of the wrong type or an
    absurd size, reached code that trusted it: AttributeError, TypeError on comparing the
    epochs, RuntimeError allocating a model of 10^18 bytes."""
    import json

    from faceclean.training.run import load_run

    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"never read: the config is refused first")
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(FacecleanError) as e:
        load_run(run, require_finished=True)
    assert needle in str(e.value) and "run" in str(e.value)


def test_a_list_with_one_huge_label_is_refused_before_the_head_is_allocated(tmp_path):
    """A label of 10**12 in a 16-image list: train tried to allocate a head of 10**12 rows
    (hung past 100 s); now one line naming the list and the label, nothing trained."""
    from faceclean.data.synthetic import make_face_folder

    faces = make_face_folder(tmp_path / "faces", identities=2, per_identity=8, size=32)
    images = sorted(p.relative_to(faces) for p in faces.rglob("*.png"))
    assert images
    listing = tmp_path / "huge.lst"
    listing.write_text(
        "".join(f"{p}\t{10**12 if i == 0 else i % 2}\n" for i, p in enumerate(images))
    )
    run = tmp_path / "run"
    res = CliRunner().invoke(
        main,
        [
            "train",
            str(listing),
            "--data",
            str(faces),
            "-o",
            str(run),
            "--max-steps",
            "1",
            "--input-size",
            "32",
            "--batch-size",
            "4",
            "--workers",
            "0",
        ],
    )
    one_error_line(res, "huge.lst", "largest label is 1000000000000")
    assert not (run / "checkpoint.pt").exists()
