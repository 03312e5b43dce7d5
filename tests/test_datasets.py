import numpy as np
import pytest

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
        ("a.jpg 1\nb.jpg one\n", r"train\.lst: line 2: label 'one' is not an integer"),
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
