import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faceclean.data.datasets import open_dataset
from faceclean.errors import FacecleanError


def test_image_folder_labels_identities_and_empty_folder_warning(faces, tmp_path):
    ds = open_dataset(faces)
    assert ds.kind == "folder" and len(ds) == 48 and ds.num_classes == 8
    assert ds.identities[0] == "id_0000" and ds.path(0) == "id_0000/00.png"
    assert np.array_equal(np.bincount(ds.labels), [6] * 8)
    root = tmp_path / "set"
    (root / "bob").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "bob" / "1.png").write_bytes((faces / "id_0000" / "00.png").read_bytes())
    ds = open_dataset(root)
    assert ds.identities == ["bob"]
    assert any("empty identity folder" in w and "empty" in w for w in ds.warnings)


def test_folder_without_images_is_an_error(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(FacecleanError, match="no images found"):
        open_dataset(tmp_path)


def test_list_file_maps_labels_and_keeps_originals(tmp_path):
    lst = tmp_path / "train.lst"
    lst.write_text("# comment\na/1.jpg 17\n\na/2.jpg 17\nb with space/1.jpg 3\n")
    ds = open_dataset(lst)
    assert ds.kind == "list" and ds.root == tmp_path
    assert ds.labels.tolist() == [1, 1, 0]
    assert ds.identities == ["3", "17"]
    assert ds.path(2) == "b with space/1.jpg"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a.jpg 1\nlonely\n", r"train\.lst: line 2: expected 'path label'"),
        (
            "a.jpg 1\nb.jpg one\n",
            r"train\.lst: line 2: label 'one' is not a small non-negative integer",
        ),
        ("\n# nothing\n", r"train\.lst: list file has no 'path label' lines"),
    ],
)
def test_bad_list_files_name_file_and_line(tmp_path, content, message):
    (tmp_path / "train.lst").write_text(content)
    with pytest.raises(FacecleanError, match=message):
        open_dataset(tmp_path / "train.lst")


def test_missing_source_is_named(tmp_path):
    with pytest.raises(FacecleanError, match="nope: no such file"):
        open_dataset(tmp_path / "nope")


def test_fingerprint_changes_with_the_listing(tmp_path):
    (tmp_path / "a.lst").write_text("x.jpg 1\ny.jpg 2\n")
    (tmp_path / "b.lst").write_text("x.jpg 1\ny.jpg 3\n")
    (tmp_path / "c.lst").write_text("x.jpg 1\ny.jpg 2\n")
    fa, fb, fc = (open_dataset(tmp_path / n).fingerprint() for n in ("a.lst", "b.lst", "c.lst"))
    assert fa == fc and fa != fb


def test_insightface_three_column_list_is_detected(tmp_path):
    lst = tmp_path / "train.lst"
    lst.write_text("1\tid 7/a b.jpg\t7\n1\tid 7/c.jpg\t7\n0\tid3/x.jpg\t3\n")
    ds = open_dataset(lst)
    assert ds.source == "list file, insightface format (detected)"
    assert [ds.path(i) for i in range(3)] == ["id 7/a b.jpg", "id 7/c.jpg", "id3/x.jpg"]
    assert ds.labels.tolist() == [1, 1, 0] and ds.identities == ["3", "7"]


def test_im2rec_list_with_float_and_several_labels_is_detected(tmp_path):
    lst = tmp_path / "train.lst"
    lst.write_text("0\t17.000000\t4.000000\ta/1 2.jpg\n1\t3.000000\t9.000000\tb/1.jpg\n")
    ds = open_dataset(lst)
    assert ds.source == "list file, im2rec format (detected)"
    assert [ds.path(i) for i in range(2)] == ["a/1 2.jpg", "b/1.jpg"]
    assert ds.identities == ["3", "17"] and ds.labels.tolist() == [1, 0]
    assert any("first is the identity" in w for w in ds.warnings)


def test_utf8_bom_is_ignored_and_format_can_be_forced(tmp_path):
    lst = tmp_path / "train.lst"
    lst.write_bytes("\ufeffé/1.jpg 5\n".encode())
    ds = open_dataset(lst)
    assert ds.path(0) == "é/1.jpg" and ds.identities == ["5"]
    # "0<TAB>2<TAB>x.jpg" is an im2rec line; forced plain, the path is "0\t2" and x.jpg fails.
    (tmp_path / "t.lst").write_text("0\t2\tx.jpg\n")
    assert open_dataset(tmp_path / "t.lst").source.startswith("list file, im2rec")
    with pytest.raises(FacecleanError, match=r"t\.lst: line 1: label 'x\.jpg'"):
        open_dataset(tmp_path / "t.lst", list_format="plain")
    forced = open_dataset(tmp_path / "t.lst", list_format="im2rec")
    assert forced.source == "list file, im2rec format (as asked)"


@pytest.mark.parametrize("label", ["99999999999999999999", "-1", "1.5", "nan", "inf", "1e400"])
def test_labels_that_are_not_small_non_negative_integers_are_named(tmp_path, label):
    for name, line in [
        ("plain.lst", f"a.jpg {label}"),
        ("insight.lst", f"1\ta.jpg\t{label}"),
        ("im2rec.lst", f"0\t{label}\ta.jpg"),
    ]:
        (tmp_path / name).write_text(f"ok.jpg 1\n{line}\n" if name == "plain.lst" else line + "\n")
        lineno = 2 if name == "plain.lst" else 1
        fmt = {"plain.lst": "plain", "insight.lst": "insightface", "im2rec.lst": "im2rec"}[name]
        with pytest.raises(
            FacecleanError, match=rf"{name}: line {lineno}: label .* is not a small"
        ):
            open_dataset(tmp_path / name, list_format=fmt)


def test_mixed_or_binary_lists_are_named_errors(tmp_path):
    (tmp_path / "mixed.lst").write_text("1\ta.jpg\t3\n0\t3.000000\tb.jpg\n")
    with pytest.raises(FacecleanError, match=r"mixed\.lst: cannot tell the list format: line 1"):
        open_dataset(tmp_path / "mixed.lst")
    (tmp_path / "bin.lst").write_bytes(b"\x00\x01\x02garbage")
    with pytest.raises(FacecleanError, match=r"bin\.lst: not a text list file \(binary"):
        open_dataset(tmp_path / "bin.lst")
    (tmp_path / "short.lst").write_text("1\ta.jpg\t3\n1\tb.jpg\n")
    with pytest.raises(FacecleanError, match=r"short\.lst: line 2: expected 'aligned<TAB>path"):
        open_dataset(tmp_path / "short.lst", list_format="insightface")


# Property-based: whatever paths and labels are written in any of the three layouts, the
# reader gives back exactly those paths and labels (or, for a bad label, a named error).
_path_chars = st.characters(
    blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="\t#\ufeff"
)
_paths = st.text(_path_chars, min_size=1, max_size=20).filter(
    lambda p: p.strip() == p and not _is_number(p) and "\x85" not in p and "\x1c" not in p
)


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def _write(fmt, rows):
    if fmt == "plain":
        return "".join(f"{p} {lab}\n" for p, lab in rows)
    if fmt == "insightface":
        return "".join(f"1\t{p}\t{lab}\n" for p, lab in rows)
    return "".join(f"{i}\t{lab:f}\t{p}\n" for i, (p, lab) in enumerate(rows))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    fmt=st.sampled_from(["plain", "insightface", "im2rec"]),
    # One line per photo: a photo listed twice is read once (see the test below).
    rows=st.lists(
        st.tuples(_paths, st.integers(0, 2**24)),
        min_size=1,
        max_size=12,
        unique_by=lambda r: os.path.normpath(r[0]),
    ),
    bom=st.booleans(),
)
def test_list_reader_gives_back_what_was_written(tmp_path, fmt, rows, bom):
    if fmt == "plain":  # a plain path cannot end in whitespace + digits (ambiguous label)
        rows = [(p, lab) for p, lab in rows if not p.split()[-1].lstrip("-").isdigit()]
        if not rows:
            return
    lst = tmp_path / "prop.lst"
    lst.write_bytes(("\ufeff" if bom else "").encode() + _write(fmt, rows).encode())
    ds = open_dataset(lst)
    assert ds.source.startswith(f"list file, {fmt} format")
    assert [ds.path(i) for i in range(len(ds))] == [p for p, _ in rows]
    assert [int(ds.identities[k]) for k in ds.labels] == [lab for _, lab in rows]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(bad=st.one_of(st.integers(max_value=-1), st.integers(min_value=2**31), st.floats()))
def test_list_reader_refuses_any_bad_label_by_line(tmp_path, bad):
    if isinstance(bad, float) and bad.is_integer() and 0 <= bad < 2**31:
        return
    (tmp_path / "bad.lst").write_text(f"a.jpg 1\nb.jpg {bad!r}\n")
    with pytest.raises(FacecleanError, match=r"bad\.lst: line 2: label"):
        open_dataset(tmp_path / "bad.lst")


def test_a_photo_listed_twice_is_read_once_and_two_labels_are_refused(tmp_path):
    """Issue 22: the same line twice was read as two images (extract: two rows, one photo)."""
    lst = tmp_path / "twice.lst"
    lst.write_text("a.jpg 1\nb.jpg 1\na.jpg 1\n./b.jpg 1\n")
    ds = open_dataset(lst)
    assert [ds.path(i) for i in range(len(ds))] == ["a.jpg", "b.jpg"]
    assert (
        "2 line(s) repeat an earlier one" in ds.warnings[0] and "line 3 = line 1" in ds.warnings[0]
    )
    lst.write_text(f"a.jpg 1\n{tmp_path / 'a.jpg'} 1\n")  # relative and absolute: one photo
    ds = open_dataset(lst)
    assert [ds.path(i) for i in range(len(ds))] == ["a.jpg"]
    lst.write_text("a.jpg 1\nb.jpg 1\na.jpg 2\n")
    with pytest.raises(FacecleanError, match=r"line 3: 'a.jpg' is listed again with label 2"):
        open_dataset(lst)
