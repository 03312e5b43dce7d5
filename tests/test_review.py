"""`faceclean review`: the queues, the server's safety, decisions saved and resumed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import one_error_line, run
from review_fixtures import fetch, make_clean, running

from faceclean.errors import FacecleanError
from faceclean.review.index import INDEX_DIR, ReviewIndex
from faceclean.review.store import REVIEW_FILE, ReviewStore, read_review


@pytest.fixture
def clean_dir(tmp_path) -> Path:
    return make_clean(tmp_path)


def post(base: str, app, payload: dict, token: str | None = None, host: str | None = None):
    headers = {"Content-Type": "application/json", "X-Review-Token": token or app.token}
    if host:
        headers["Host"] = host
    return fetch(base + "/decide", json.dumps(payload).encode(), headers)


def test_queues_are_sorted_by_doubt_and_complete(clean_dir):
    index = ReviewIndex(clean_dir)
    scores = pq.read_table(clean_dir / "scores.parquet").to_pylist()
    removed = [r for r in scores if not r["keep"]]
    rows = index.rows("removals", 0, 100)
    assert sorted(r["path"] for r in rows) == sorted(r["path"] for r in removed)
    doubt = [abs(r["discriminability"] - 0.8) for r in rows]
    assert doubt == sorted(doubt) and rows[0]["path"] == "id_0001/07.png"
    assert rows[0]["negative_identity"] == "id_0003" and rows[0]["norm"] is not None
    border = index.rows("borderline", 0, 100)
    d = [r["discriminability"] for r in border]
    assert d == sorted(d) and all(0.8 <= x < 1.2 for x in d) and len(d) > 0
    kept_low = [r for r in scores if r["keep"] and r["discriminability"] < 1.2]
    assert len(border) == len(kept_low)
    merges = index.rows("merges", 0, 10)
    assert [m["identities"] for m in merges] == [["id_0004", "id_0005"]]
    dups = index.rows("duplicates", 0, 10)
    assert [sorted(g["files"]) for g in dups] == [["id_0003/05.png", "id_0003/06.png"]]
    # The strips: a class's most typical faces, never a dropped one.
    assert "id_0001/07.png" not in index.faces[1] and len(index.faces[1]) == 5


def test_index_is_reused_and_rebuilt_when_the_clean_changes(clean_dir, tmp_path):
    ReviewIndex(clean_dir)
    manifest = clean_dir / INDEX_DIR / "manifest.json"
    built = manifest.stat().st_mtime_ns
    ReviewIndex(clean_dir)
    assert manifest.stat().st_mtime_ns == built  # unchanged tables: not rebuilt
    (clean_dir / INDEX_DIR / "overlap.parquet").unlink()  # an index of an older version
    assert ReviewIndex(clean_dir).counts["overlap"] == 0
    built = manifest.stat().st_mtime_ns
    table = pq.read_table(clean_dir / "scores.parquet")
    pq.write_table(table.slice(1), clean_dir / "scores.parquet")  # a different clean
    assert ReviewIndex(clean_dir).counts["removals"] == 2
    assert manifest.stat().st_mtime_ns != built


def test_rows_cross_row_groups(tmp_path, monkeypatch):
    from faceclean.review import index as index_mod

    monkeypatch.setattr(index_mod, "ROW_GROUP", 3)  # a page must join row groups
    clean_dir = make_clean(tmp_path, tau_intra=1.05)
    small = ReviewIndex(clean_dir)
    whole = pq.read_table(clean_dir / INDEX_DIR / "removals.parquet")["key"].to_pylist()
    assert small.files["removals"].num_row_groups > 2 and len(whole) >= 8
    got = small.rows("removals", 2, 8)
    assert [r["key"] for r in got] == whole[2:8]
    assert [r["position"] for r in got] == list(range(2, 8))
    assert small.item("removals", len(whole)) is None and small.item("removals", -1) is None


def test_pages_and_thumbnails(clean_dir):
    with running(clean_dir) as (base, _):
        status, body, ctype = fetch(base + "/")
        assert status == 200 and b"Removals (<span id='n-removals'>0</span>/2)" in body
        status, body, ctype = fetch(base + "/q/removals")
        page = body.decode()
        assert status == 200 and ctype.startswith("text/html")
        assert "id_0001/07.png" in page and "id_0002/07.png" in page  # file names shown
        assert "D = 0.122" in page and "cos_neg" in page and "norm" in page
        assert "http://" not in page and "https://" not in page  # nothing from the network
        for kind in ("borderline", "merges", "duplicates"):
            assert fetch(base + f"/q/{kind}")[0] == 200
        status, data, ctype = fetch(base + "/thumb?p=id_0001/07.png")
        assert status == 200 and ctype == "image/jpeg" and data[:2] == b"\xff\xd8"
        assert len(list((clean_dir / INDEX_DIR / "thumbs").rglob("*.jpg"))) == 1  # cached
        assert fetch(base + "/q/nothing")[0] == 404


@pytest.mark.parametrize(
    "path",
    [
        "../emb.parquet",
        "..%2Femb.parquet",
        "id_0001/../../emb.parquet",
        "/etc/passwd",
        "%2Fetc%2Fpasswd",
        "link/emb.parquet",
        "outside.png",
        "",
    ],
)
def test_thumbnails_refuse_paths_outside_the_dataset_root(clean_dir, path):
    data = clean_dir.parent / "data"
    (data / "link").symlink_to(clean_dir.parent, target_is_directory=True)
    (clean_dir.parent / "real.png").write_bytes((data / "id_0000" / "00.png").read_bytes())
    (data / "outside.png").symlink_to(clean_dir.parent / "real.png")  # points out
    with running(clean_dir) as (base, _):
        status, body, _ = fetch(base + "/thumb?p=" + path)
        assert status == 404, body
    assert not list((clean_dir / INDEX_DIR).glob("thumbs/*/*.jpg"))


def test_decisions_need_the_token_and_a_local_host(clean_dir):
    with running(clean_dir) as (base, app):
        ok = {"kind": "removals", "position": 0, "decision": "keep"}
        assert post(base, app, ok, token="wrong")[0] == 403
        assert post(base, app, ok, host="evil.example:80")[0] == 403
        assert fetch(base + "/", headers={"Host": "evil.example"})[0] == 403
        status, body, _ = fetch(base + "/decide", json.dumps(ok).encode())  # no token
        assert status == 403
        assert not (clean_dir / REVIEW_FILE).exists()
        for bad in (
            {"kind": "removals", "position": 0, "decision": "accept"},
            {"kind": "removals", "position": 99, "decision": "keep"},
            {"kind": "../x", "position": 0, "decision": "keep"},
            {"kind": "merges", "position": 0, "decision": "reject_link", "link": 7},
            {"kind": "duplicates", "position": 0, "decision": "drop", "link": 2},
            {"kind": "removals", "position": True, "decision": "keep"},
        ):
            assert post(base, app, bad)[0] == 400
        assert post(base, app, ok)[0] == 200
    rows = pq.read_table(clean_dir / REVIEW_FILE).to_pylist()
    assert len(rows) == 1
    r = rows[0]
    assert (r["file"], r["decision"], r["kind"]) == ("id_0001/07.png", "keep", "removals")
    assert r["discriminability"] == pytest.approx(0.1223, abs=1e-3) and r["time"] is not None


def test_every_decision_is_saved_at_once_and_resumed(clean_dir):
    before = sorted(p.name for p in clean_dir.parent.iterdir())
    with running(clean_dir) as (base, app):
        assert post(base, app, {"kind": "removals", "position": 0, "decision": "keep"})[0] == 200
        assert read_review(clean_dir / REVIEW_FILE).num_rows == 1  # on disk already
        assert post(base, app, {"kind": "removals", "position": 1, "decision": "drop"})[0] == 200
        link = {"kind": "merges", "position": 0, "decision": "reject_link", "link": 0}
        assert post(base, app, link)[0] == 200
        assert post(base, app, {"kind": "duplicates", "position": 0, "decision": "accept"})[0]
        # undo: the client posts the previous state (none)
        undo = {"kind": "removals", "position": 1, "decision": None}
        assert post(base, app, undo)[0] == 200
        status, body, _ = fetch(base + "/q/borderline")
    table = read_review(clean_dir / REVIEW_FILE)
    assert sorted(table["decision"].to_pylist()) == ["accept", "keep", "reject_link"]
    link_row = [r for r in table.to_pylist() if r["decision"] == "reject_link"][0]
    assert {link_row["link_a"], link_row["link_b"]} == {"id_0004", "id_0005"}
    # A new server (after a kill) resumes: the first undecided removal's page, marked.
    with running(clean_dir) as (base, app):
        assert app.first_undecided("removals") == 1
        page = fetch(base + "/q/removals")[1].decode()
        assert "data-decision='keep'" in page and "n-removals'>1</span>/2)" in page
        assert "class='rej'" in fetch(base + "/q/merges")[1].decode()
    # Nothing written outside the clean folder; no temporary left inside it.
    assert sorted(p.name for p in clean_dir.parent.iterdir()) == before
    assert not [p for p in clean_dir.iterdir() if ".tmp-" in p.name]


def test_a_newer_format_is_refused(clean_dir):
    summary = json.loads((clean_dir / "summary.json").read_text())
    (clean_dir / "summary.json").write_text(json.dumps(summary | {"format": 99}))
    line = one_error_line(run("review", clean_dir, "--port", "0"), "summary.json", "newer")
    assert "format 99" in line
    assert not (clean_dir / INDEX_DIR).exists() and not (clean_dir / REVIEW_FILE).exists()
    (clean_dir / "summary.json").write_text(json.dumps(summary))
    ReviewStore(clean_dir).set("a.png", "removals", "keep", {})
    t = pq.read_table(clean_dir / REVIEW_FILE)
    meta = dict(t.schema.metadata) | {b"faceclean_review_format": b"2"}
    pq.write_table(t.replace_schema_metadata(meta), clean_dir / REVIEW_FILE)
    with pytest.raises(FacecleanError, match="newer faceclean.*review format 2"):
        ReviewStore(clean_dir)
    one_error_line(run("review", clean_dir, "--port", "0"), "review.parquet", "newer")


def test_not_a_clean_folder_and_a_busy_port(tmp_path, clean_dir):
    one_error_line(run("review", tmp_path / "nowhere"), "no summary.json")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        one_error_line(run("review", clean_dir, "--port", port), f"port {port}", "in use")


def test_help_explains_the_keys():
    res = run("review", "--help")
    assert res.exit_code == 0 and "k keep" in res.output and "--review" in res.output


def test_a_failed_save_changes_nothing_and_is_reported(clean_dir, monkeypatch):
    with running(clean_dir) as (base, app):
        ok = {"kind": "removals", "position": 0, "decision": "keep"}
        assert post(base, app, ok)[0] == 200

        def full(rows):  # the disk fills up between two clicks
            raise OSError(28, "No space left on device", str(clean_dir / REVIEW_FILE))

        monkeypatch.setattr(app.store, "_save", full)
        status, body, _ = post(base, app, {**ok, "position": 1, "decision": "drop"})
        assert status == 500 and b"No space left" in body
        assert app.store.decision("id_0002/07.png") is None  # memory agrees with the disk
        assert fetch(base + "/q/removals")[0] == 200  # and the app serves on
    assert read_review(clean_dir / REVIEW_FILE)["decision"].to_pylist() == ["keep"]


def test_gather_reads_chosen_rows_in_order_across_batches(clean_dir, monkeypatch):
    from faceclean.review import face_queues

    monkeypatch.setattr(face_queues, "BATCH", 5)
    path = clean_dir / "scores.parquet"
    rows = [40, 3, 3, 17, 0, 47]
    got = face_queues.gather(path, np.asarray(rows), ["path", "label"])
    whole = pq.read_table(path, columns=["path", "label"])
    assert got.to_pylist() == whole.take(rows).to_pylist()
    assert face_queues.gather(path, np.zeros(0, np.int64), ["path"]).num_rows == 0
    norms = face_queues.norms([str(clean_dir.parent / "emb.parquet")], got["path"])
    emb = pq.read_table(clean_dir.parent / "emb.parquet", columns=["path", "norm"]).to_pylist()
    by_path = {r["path"]: r["norm"] for r in emb}
    assert norms.to_pylist() == pytest.approx([by_path[p] for p in got["path"].to_pylist()])
    assert face_queues.norms(["gone.parquet"], got["path"]).null_count == len(rows)
