"""align defects of the fuzzing pass: one crop per photo however the photos are named, no
NaN thresholds, no stale temporaries, a full disk while packing a .rec said plainly."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from faceclean.cli import main
from faceclean.data.align import unique_relpaths
from tests.conftest import SHARED

DETECTOR = SHARED / "models" / "face_detection_yunet_2026may.onnx"
RAW = SHARED / "data" / "celeb_dev_raw"
needs_raw = pytest.mark.skipif(
    not (DETECTOR.is_file() and RAW.is_dir()), reason=f"shared detector and photos not at {SHARED}"
)


def test_unique_relpaths_keeps_every_photo_apart():
    rels = ["0/a.jpg", "0/a.jpg", "0/a~2.jpg", "1/a.jpg", "0/a.jpg"]
    out = unique_relpaths(rels)
    assert len(set(out)) == len(out) == 5
    assert out[0] == "0/a.jpg" and out[2] == "0/a~2.jpg" and out[3] == "1/a.jpg"


@pytest.fixture()
def same_named(tmp_path) -> Path:
    """Three different photos named same.jpg in three folders, listed by absolute path
    under one label: all three crops went to 0/same.jpg, the list named it three times."""
    src = sorted(RAW.rglob("*.jpg"))[:3]
    lines = []
    for i, p in enumerate(src):
        d = tmp_path / "photos" / f"d{i}"
        d.mkdir(parents=True)
        shutil.copy(p, d / "same.jpg")
        lines.append(f"{(d / 'same.jpg').resolve()} 0\n")
    listing = tmp_path / "list.txt"
    listing.write_text("".join(lines))
    return listing


def _align(listing: Path, out: Path, *extra: str):
    return CliRunner().invoke(
        main, ["align", str(listing), "-o", str(out), "--detector", str(DETECTOR), *extra]
    )


@needs_raw
def test_photos_of_one_name_get_one_crop_each(same_named, tmp_path):
    out = tmp_path / "out"
    res = _align(same_named, out, "--no-refine", "--json", str(tmp_path / "align.json"))
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "align.json").read_text())["summary"]
    assert summary["faces_written"] == 3 and summary["images"] == 3
    listed = [line.split()[0] for line in (out / "list.txt").read_text().splitlines()]
    assert len(set(listed)) == 3 and all((out / p).is_file() for p in listed)
    # A killed run's zero-byte temporary (a dead PID) is removed when the job resumes.
    stale = out / "0" / ".same.jpg.tmp-999999999"
    stale.write_bytes(b"")
    res = _align(same_named, out, "--no-refine")
    assert res.exit_code == 0, res.output
    assert not stale.exists()


@pytest.mark.parametrize("option", ["--min-score", "--min-size"])
def test_nan_thresholds_are_refused(same_named, tmp_path, option):
    res = _align(same_named, tmp_path / "out", option, "nan")
    assert res.exit_code == 2 and "not a finite number" in res.output
    assert not (tmp_path / "out").exists()


@needs_raw
def test_a_full_disk_while_packing_a_rec_says_what_is_kept(same_named, tmp_path, monkeypatch):
    import faceclean.data.align as align_module

    def full(path, items):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(align_module, "write_face_rec", full)
    res = _align(same_named, tmp_path / "out.rec", "--no-refine", "-q")
    assert res.exit_code == 2, res.output
    assert "out.rec: No space left on device while packing the crops" in res.output
    assert "out.rec.partial" in res.output and "resumes" in res.output
    assert res.output.strip().count("\n") == 0


@needs_raw
def test_rec_labels_keep_identities_apart_when_names_spell_one_number(tmp_path):
    """Folders "7" and "07" were both packed as label 7: two people filed as one."""
    from faceclean.data.datasets import open_dataset

    src = sorted(RAW.rglob("*.jpg"))
    for name, photo in (("7", src[0]), ("07", src[40])):
        (tmp_path / "n" / name).mkdir(parents=True)
        shutil.copy(photo, tmp_path / "n" / name / "a.jpg")
    res = CliRunner().invoke(
        main,
        ["align", str(tmp_path / "n"), "-o", str(tmp_path / "n.rec"), "--detector", str(DETECTOR),
         "--no-refine", "-q"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    ds = open_dataset(tmp_path / "n.rec")
    assert len(set(ds.labels.tolist())) == 2


@needs_raw
def test_another_input_into_the_same_output_is_not_resumed(tmp_path):
    """A second DATA with the same file names resumed on the first one's crops (exit 0)."""
    src = sorted(RAW.rglob("*.jpg"))
    for folder, photo in (("s1", src[0]), ("s2", src[40])):
        (tmp_path / folder / "x").mkdir(parents=True)
        shutil.copy(photo, tmp_path / folder / "x" / "p.jpg")
    out = tmp_path / "out"
    base = ["-o", str(out), "--detector", str(DETECTOR), "--no-refine", "-q"]
    assert CliRunner().invoke(main, ["align", str(tmp_path / "s1"), *base]).exit_code == 0
    first = (out / "x" / "p.jpg").read_bytes()
    res = CliRunner().invoke(
        main, ["align", str(tmp_path / "s2"), *base, "--json", str(tmp_path / "a.json")]
    )
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "a.json").read_text())["summary"]["resumed"] == 0
    assert (out / "x" / "p.jpg").read_bytes() != first


@needs_raw
def test_a_photo_that_could_not_be_read_is_tried_again(tmp_path):
    """A listed photo not there yet failed as 'cannot open' and a re-run once it was there
    resumed it as done: nothing aligned, exit 0."""
    photo = sorted(RAW.rglob("*.jpg"))[0]
    (tmp_path / "good" / "x").mkdir(parents=True)
    listing = tmp_path / "good" / "l.txt"
    listing.write_text("x/p.jpg 1\n")
    base = ["align", str(listing), "-o", str(tmp_path / "out"), "--detector", str(DETECTOR)]
    base += ["--no-refine", "-q", "--json", str(tmp_path / "a.json")]
    CliRunner().invoke(main, base)
    shutil.copy(photo, tmp_path / "good" / "x" / "p.jpg")
    res = CliRunner().invoke(main, base)
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "a.json").read_text())["summary"]["faces_written"] == 1
