"""The overlap queue: training classes `--exclude` dropped as evaluation identities."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
from helpers import one_error_line, run
from review_fixtures import fetch, make_clean, make_overlap, make_store, running

from faceclean.review.server import ReviewApp
from faceclean.review.store import REVIEW_FILE


def clean_with_exclude(root, exclude, out="clean", *extra):
    res = run(
        "clean", root / "emb.parquet", "-o", root / out, "--tau-intra", "0.8",
        "--tau-inter", "0.6", "--exclude", exclude, *extra,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    return root / out


def test_overlap_pairs_are_shown_and_a_split_keeps_the_class(tmp_path):
    make_store(tmp_path)
    overlap = make_overlap(tmp_path)
    pairs = pq.read_table(overlap / "identity_pairs.parquet").to_pylist()
    assert [(p["train_identity"], p["eval_identity"]) for p in pairs] == [("id_0002", "person_x")]
    clean_dir = clean_with_exclude(tmp_path, overlap)
    listed = pq.read_table(clean_dir / "clean.parquet")["identity"].to_pylist()
    assert "id_0002" not in listed
    with running(clean_dir) as (base, app):
        page = fetch(base + "/q/overlap")[1].decode()
        assert "train: id_0002" in page and "eval: person_x" in page
        status, data, ctype = fetch(base + "/thumb?p=person_x/00.png&src=eval")
        assert status == 200 and ctype == "image/jpeg"
        assert fetch(base + "/thumb?p=../eval.parquet&src=eval")[0] == 404
        assert fetch(base + "/thumb?p=person_x/00.png")[0] == 200  # not under the train root:
        assert fetch(base + "/thumb?p=person_x/00.png")[1] == app.thumbs._missing  # placeholder
        app.decide({"kind": "overlap", "position": 0, "decision": "split"})
    row = pq.read_table(clean_dir / REVIEW_FILE).to_pylist()[0]
    assert row["identities"] == ["id_0002", "person_x"] and row["decision"] == "split"
    again = clean_with_exclude(tmp_path, overlap, "again", "--review", clean_dir / REVIEW_FILE)
    listed = pq.read_table(again / "clean.parquet")["identity"].to_pylist()
    assert listed.count("id_0002") == 7  # back, less its misfiled face (D < tau_intra)
    s = json.loads((again / "summary.json").read_text())
    assert s["review_overlap_split"] == 1 and s["exclude"] == str(overlap.resolve())
    assert s["excluded_classes"] == 0 and not list(again.glob(".exclude*"))


def test_a_split_needs_the_overlap_folder(tmp_path):
    clean_dir = make_clean(tmp_path)
    ReviewApp(clean_dir).store.set(
        "overlap id_0002 = person_x", "overlap", "split", {"identities": ["id_0002", "p"]}
    )
    labels = tmp_path / "labels.txt"
    labels.write_text("2\n")
    res = run(
        "clean", tmp_path / "emb.parquet", "-o", tmp_path / "x", "--exclude", labels,
        "--review", clean_dir / REVIEW_FILE,
    )  # fmt: skip
    one_error_line(res, "labels.txt", "`faceclean overlap` folder")
