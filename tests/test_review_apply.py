"""`faceclean clean --review`: a person's decisions win over the thresholds."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import one_error_line, run
from review_fixtures import make_clean

from faceclean.review.server import ReviewApp
from faceclean.review.store import REVIEW_FILE, ReviewStore


def position(app: ReviewApp, kind: str, key: str) -> int:
    rows = app.index.rows(kind, 0, 1000)
    return next(r["position"] for r in rows if r["key"] == key)


@pytest.fixture
def reviewed(tmp_path) -> Path:
    """The fixture's clean with a review: keep one removal, drop one kept face (borderline),
    split the merged group, accept the duplicate pair, and a decision on a vanished file."""
    clean_dir = make_clean(tmp_path)
    app = ReviewApp(clean_dir)
    border = app.index.rows("borderline", 0, 1)[0]["key"]
    for kind, key, decision in (
        ("removals", "id_0001/07.png", "keep"),
        ("removals", "id_0002/07.png", "drop"),  # agrees with the threshold
        ("borderline", border, "drop"),
    ):
        app.decide({"kind": kind, "position": position(app, kind, key), "decision": decision})
    app.decide({"kind": "merges", "position": 0, "decision": "split"})
    app.decide({"kind": "duplicates", "position": 0, "decision": "accept"})
    ReviewStore(clean_dir).set("gone/x.png", "removals", "drop", {"file": "gone/x.png"})
    (clean_dir / "border.txt").write_text(border)
    return clean_dir


def clean_again(clean_dir: Path, out: Path, *extra) -> tuple:
    store = clean_dir.parent / "emb.parquet"
    res = run("clean", store, "-o", out, "--tau-intra", "0.8", "--tau-inter", "0.6", *extra)
    return res, out


def listed(out: Path) -> dict[str, int]:
    t = pq.read_table(out / "clean.parquet")
    return dict(zip(t["path"].to_pylist(), t["label"].to_pylist(), strict=True))


def test_decisions_win_and_the_summary_counts_them(reviewed, tmp_path):
    border = (reviewed / "border.txt").read_text()
    res, out = clean_again(reviewed, tmp_path / "again", "--review", reviewed / REVIEW_FILE)
    assert res.exit_code == 0, res.output
    assert "1 reviewed file(s) are not in this clean, e.g. gone/x.png" in res.output
    rows = listed(out)
    assert "id_0001/07.png" in rows  # kept by the person against D < tau_intra
    assert "id_0002/07.png" not in rows and border not in rows
    assert "id_0003/05.png" in rows and "id_0003/06.png" not in rows  # one copy kept
    assert rows["id_0004/00.png"] != rows["id_0005/00.png"]  # the split group
    s = json.loads((out / "summary.json").read_text())
    assert s["review_kept_against_threshold"] == 1
    assert s["review_dropped_against_threshold"] == 2  # the borderline face and the copy
    assert s["review_face_decisions"] == 4 and s["review_missing_files"] == 1
    assert s["review_missing_examples"] == ["gone/x.png"]
    assert s["review_classes_regrouped"] == 1 and s["merged_groups"] == 0
    assert s["clean_rows"] == 48 - 1 - 2 and s["clean_classes"] == 6
    scores = pq.read_table(out / "scores.parquet").to_pylist()
    by_path = {r["path"]: r for r in scores}
    assert by_path["id_0001/07.png"]["review"] == "keep" and by_path["id_0001/07.png"]["keep"]
    assert by_path["id_0000/00.png"]["review"] is None
    assert pq.read_table(out / "merges.parquet")["group_size"].to_pylist() == [1] * 6
    # The review travels with the clean it shaped: reviewing `again` resumes it.
    assert ReviewStore(out).rows.keys() == ReviewStore(reviewed).rows.keys()
    # Without the review the thresholds alone decide (the same folder, for contrast).
    res, plain = clean_again(reviewed, tmp_path / "plain")
    assert "id_0001/07.png" not in listed(plain)
    assert listed(plain)["id_0004/00.png"] == listed(plain)["id_0005/00.png"]


def test_a_review_survives_other_thresholds(reviewed, tmp_path):
    app = ReviewApp(reviewed)
    app.decide({"kind": "merges", "position": 0, "decision": "accept"})
    store = reviewed.parent / "emb.parquet"
    out = tmp_path / "strict"
    res = run(
        "clean", store, "-o", out, "--tau-intra", "0.05", "--tau-inter", "0.99",
        "--review", reviewed / REVIEW_FILE,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    rows = listed(out)
    assert "id_0002/07.png" not in rows  # D -0.07 < 0.05 anyway: the person agrees
    assert rows["id_0004/00.png"] == rows["id_0005/00.png"]  # accepted though 0.99 splits
    s = json.loads((out / "summary.json").read_text())
    assert s["merged_groups"] == 1 and s["review_classes_regrouped"] == 1


def test_reclean_in_place_keeps_the_review_and_never_drops_it_silently(reviewed):
    decisions = ReviewStore(reviewed).rows.keys()
    res, _ = clean_again(reviewed, reviewed, "--overwrite")
    one_error_line(res, str(reviewed), "review.parquet", "--review")
    assert ReviewStore(reviewed).rows.keys() == decisions  # refused before any change
    res, _ = clean_again(reviewed, reviewed, "--overwrite", "--review", reviewed / REVIEW_FILE)
    assert res.exit_code == 0, res.output
    assert ReviewStore(reviewed).rows.keys() == decisions
    assert "id_0001/07.png" in listed(reviewed)


def test_bad_review_files(reviewed, tmp_path):
    res, _ = clean_again(reviewed, tmp_path / "a", "--review", tmp_path / "none.parquet")
    one_error_line(res, "none.parquet", "not found")
    res, _ = clean_again(reviewed, tmp_path / "b", "--review", reviewed / "summary.json")
    one_error_line(res, "summary.json", "not a Parquet file")
    res, _ = clean_again(reviewed, tmp_path / "c", "--review", reviewed / "scores.parquet")
    one_error_line(res, "scores.parquet", "not a `faceclean review` file")
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_one_file_of_a_duplicate_group_dropped_on_its_own(tmp_path):
    clean_dir = make_clean(tmp_path)
    app = ReviewApp(clean_dir)
    files = app.index.item("duplicates", 0)["files"]
    with pytest.raises(ValueError, match="only be dropped"):
        app.decide({"kind": "duplicates", "position": 0, "decision": "keep", "link": 1})
    with pytest.raises(ValueError, match="accepted or split"):
        app.decide({"kind": "duplicates", "position": 0, "decision": "drop"})
    app.decide({"kind": "duplicates", "position": 0, "decision": "drop", "link": 1})
    assert app.rejected(app.index.item("duplicates", 0)) == {1}
    res, out = clean_again(clean_dir, tmp_path / "again", "--review", clean_dir / REVIEW_FILE)
    assert res.exit_code == 0, res.output
    rows = listed(out)
    assert files[0] in rows and files[1] not in rows
    assert json.loads((out / "summary.json").read_text())["review_dropped_against_threshold"] == 1
