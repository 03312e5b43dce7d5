"""`faceclean report` lists every removal with its file name, paged."""

from __future__ import annotations

import csv
import re

import pyarrow.parquet as pq
from helpers import run
from review_fixtures import make_clean

from faceclean.cleaning import report_removals


def test_every_removal_is_listed_with_its_file_name(tmp_path, monkeypatch):
    monkeypatch.setattr(report_removals, "PAGE_ROWS", 3)
    clean_dir = make_clean(tmp_path, tau_intra=1.0)
    scores = pq.read_table(clean_dir / "scores.parquet").to_pylist()
    removed = {r["path"]: r for r in scores if not r["keep"]}
    assert len(removed) == 8
    res = run("report", clean_dir)
    assert res.exit_code == 0, res.output
    folder = clean_dir / "report"
    with open(folder / "removals.csv") as f:
        rows = list(csv.DictReader(f))
    by_d = sorted(removed, key=lambda p: removed[p]["discriminability"])
    assert [r["path"] for r in rows] == by_d
    first = rows[0]  # id_0002/07 is one of id_0000's faces, filed under id_0002
    assert first["path"] == "id_0002/07.png" and first["negative_identity"] == "id_0000"
    pages = sorted((folder / "removals").glob("page-*.html"))
    assert [p.name for p in pages] == ["page-0001.html", "page-0002.html", "page-0003.html"]
    listed = []
    for p in pages:
        listed += re.findall(r"<tr><td>\d+</td><td>([^<]+)</td>", p.read_text())
    assert listed == [r["path"] for r in rows]  # each removal once, in order, by file name
    assert "href='page-0002.html'>next" in pages[0].read_text()
    assert "href='page-0002.html'>previous" in pages[2].read_text()
    page = (folder / "report.html").read_text()
    assert "8 removals with their file names" in page and "removals/page-0001.html" in page
