"""The report's face sections: merged groups, overlap and duplicates, readable offline."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from faceclean.cli import main


@pytest.fixture
def report_page(tmp_path, faces, tiny_model) -> Path:
    """A report of a clean with a merged group, an overlap and duplicates."""
    data = tmp_path / "data"
    shutil.copytree(faces, data)
    # id_0000 filed twice (a split identity: merged, and every image a cross-class copy),
    # and one image of id_0003 uploaded twice (a duplicate within a class).
    shutil.copytree(data / "id_0000", data / "id_0000_again")
    shutil.copy(data / "id_0003" / "00.png", data / "id_0003" / "00_copy.png")
    evaluation = tmp_path / "eval"
    shutil.copytree(faces / "id_0005", evaluation / "person_e")
    shutil.copytree(faces / "id_0006", evaluation / "person_f")
    run = CliRunner().invoke  # the tiny model is barely discriminative: copies only, at 0.999
    for src, out in ((data, "train.parquet"), (evaluation, "eval.parquet")):
        res = run(
            main, ["extract", str(src), "-m", str(tiny_model), "-o", str(tmp_path / out), "-q"]
        )
        assert res.exit_code == 0, res.output
    train, ev = tmp_path / "train.parquet", tmp_path / "eval.parquet"
    res = run(main, ["overlap", str(train), str(ev), "--tau", "0.999", "-o", str(tmp_path / "ov")])
    assert res.exit_code == 0, res.output
    clean = tmp_path / "clean"
    args = ["clean", str(train), "-o", str(clean), "--tau-inter", "0.999", "--dedup", "0.999"]
    res = run(main, [*args, "--exclude", str(tmp_path / "ov")])
    assert res.exit_code == 0, res.output
    res = run(main, ["report", str(clean)])
    assert res.exit_code == 0, res.output
    return clean / "report" / "report.html"


def test_report_shows_groups_overlap_and_duplicates_offline(report_page):
    clean = report_page.parent.parent
    page = report_page.read_text()
    assert "Merged groups (1;" in page and "id_0000_again" in page
    assert "Overlap with the evaluation set (2 identity pairs" in page and "person_e" in page
    assert "ACROSS CLASSES" in page and "within one class" in page
    # Offline: every image is a data URI or a file beside the page.
    sources = re.findall(r"<img src='([^']*)'", page)
    external = [s for s in sources if not s.startswith("data:image/jpeg;base64,")]
    assert set(external) <= {"discriminability.png", "contact_sheet.png"}
    assert all((clean / "report" / s).is_file() for s in external)
    assert len(sources) - len(external) >= 2 * 3 + 2 * 3 + 6 + 2


@pytest.mark.slow
@pytest.mark.skipif(
    not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")),
    reason="no Chromium to render the report",
)
def test_report_renders_in_headless_chromium_offline(report_page):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from render_report import render

    def colourful(page: Path) -> int:
        shot = page.with_suffix(".png")
        render(page, shot, width=1000, height=8000)
        img = np.asarray(Image.open(shot).convert("RGB"), np.int16)
        assert img.shape == (8000, 1000, 3)
        # The synthetic faces are coloured; text and grey backgrounds are not.
        return int((img.max(2) - img.min(2) > 40).sum())

    # The same page with every embedded thumbnail broken is the baseline.
    broken = report_page.with_name("broken.html")
    text = report_page.read_text()
    broken.write_text(re.sub(r"data:image/jpeg;base64,[^']*", "data:image/jpeg;base64,AA", text))
    shown, baseline = colourful(report_page), colourful(broken)
    print("colourful pixels", shown, "with the thumbnails broken", baseline)
    assert shown - baseline > 20 * 72 * 72 // 2  # at least 20 half-coloured thumbnails
