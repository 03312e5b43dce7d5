"""extract refuses loudly: too many failed images (exit 2, nothing left behind), options
out of range (one line), an output that exists or is one of the inputs; and it says which
list layout it read."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from faceclean.cli import main
from faceclean.data.extraction import extract
from faceclean.data.store import read_metadata
from faceclean.errors import FacecleanError


def _broken_set(root, faces, good, bad):
    (root / "a").mkdir(parents=True)
    for i in range(good):
        (root / "a" / f"g{i}.png").write_bytes((faces / "id_0000" / "00.png").read_bytes())
    for i in range(bad):
        (root / "a" / f"b{i}.jpg").write_bytes(b"not an image")
    return root


def _left_behind(folder, keep):
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def test_every_image_failing_is_an_error_and_leaves_nothing(faces, tiny_model, tmp_path):
    data = _broken_set(tmp_path / "set", faces, good=0, bad=5)
    out = tmp_path / "e.parquet"
    with pytest.raises(FacecleanError, match=r"set: all 5 images failed; e\.g\. a/b0\.jpg: not an"):
        extract(data, tiny_model, out, max_failures=1.0)
    assert _left_behind(tmp_path, {"set"}) == []


def test_more_failures_than_the_share_is_an_error(faces, tiny_model, tmp_path):
    data = _broken_set(tmp_path / "set", faces, good=3, bad=5)
    out = tmp_path / "e.parquet"
    with pytest.raises(
        FacecleanError, match=r"5 of 8 images failed, more than --max-failures 0\.5"
    ):
        extract(data, tiny_model, out, batch_size=2, chunk_size=2)
    assert _left_behind(tmp_path, {"set"}) == []
    result = extract(data, tiny_model, out, max_failures=0.7)
    assert result.num_written == 3 and result.num_failed == 5
    with pytest.raises(FacecleanError, match="max_failures is a share between 0 and 1"):
        extract(data, tiny_model, max_failures=1.5)


def test_cli_exits_2_with_one_line_when_everything_fails(faces, tiny_model, tmp_path):
    data = _broken_set(tmp_path / "set", faces, good=0, bad=3)
    out = tmp_path / "e.parquet"
    res = CliRunner().invoke(
        main, ["extract", str(data), "-m", str(tiny_model), "-o", str(out), "-q"]
    )
    assert res.exit_code == 2 and "all 3 images failed" in res.output
    assert res.output.strip().count("\n") == 0
    assert _left_behind(tmp_path, {"set"}) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-size", "0"], "Invalid value for '--batch-size': 0 is not in the range"),
        (["--workers", "0"], "Invalid value for '--workers'"),
        (["--chunk-size", "-1"], "Invalid value for '--chunk-size'"),
        (["--std", "0"], "Invalid value for '--std': std values must be positive"),
        (["--std", "1,nan,1"], "Invalid value for '--std'"),
        (["--mean", "inf"], "Invalid value for '--mean'"),
        (["--max-failures", "1.5"], "Invalid value for '--max-failures'"),
        (["--format", "csv"], "Invalid value for '--format'"),
    ],
)
def test_numeric_options_have_ranges_and_one_line_errors(
    faces, tiny_model, tmp_path, args, message
):
    out = tmp_path / "e.parquet"
    res = CliRunner().invoke(
        main, ["extract", str(faces), "-m", str(tiny_model), "-o", str(out), *args]
    )
    assert res.exit_code == 2 and message in res.output
    assert res.output.strip().count("\n") == 0, res.output
    assert not out.exists()


def test_output_checks_come_before_any_work_and_never_replace_an_input(faces, tiny_model, tmp_path):
    out = tmp_path / "e.parquet"
    out.write_bytes(b"precious")
    # the data does not even exist: the output is checked first
    with pytest.raises(FacecleanError, match=r"e\.parquet: output already exists"):
        extract(tmp_path / "nothing", tiny_model, out)
    lst = tmp_path / "train.lst"
    lst.write_text("a.png 0\n")
    model_copy = tmp_path / "m.onnx"
    model_copy.write_bytes(tiny_model.read_bytes())
    for given in (lst, model_copy):
        data, model = (given, tiny_model) if given == lst else (faces, given)
        with pytest.raises(FacecleanError, match="is also an input"):
            extract(data, model, given, overwrite=True)
    assert lst.read_text() == "a.png 0\n" and model_copy.read_bytes() == tiny_model.read_bytes()
    with pytest.raises(FacecleanError, match="output is a folder"):
        extract(faces, tiny_model, tmp_path, overwrite=True)
    with pytest.raises(FacecleanError, match="x.csv: the embedding store is Parquet"):
        extract(faces, tiny_model, tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()


def test_extract_summary_says_which_list_format_was_detected(faces, tiny_model, tmp_path):
    lst = tmp_path / "train.lst"
    lines = [f"{i}\t{k}.000000\t{faces}/id_000{k}/0{i % 6}.png" for i, k in enumerate([0, 0, 1])]
    lst.write_text("\n".join(lines) + "\n")
    out = tmp_path / "e.parquet"
    res = CliRunner().invoke(main, ["extract", str(lst), "-m", str(tiny_model), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "list file, im2rec format (detected)" in res.output
    meta = read_metadata(out)
    assert meta["dataset_source"] == "list file, im2rec format (detected)"
    assert pq.read_table(out)["identity"].to_pylist() == ["0", "0", "1"]
