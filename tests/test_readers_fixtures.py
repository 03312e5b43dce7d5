"""faceclean's readers on files written by the real MXNet tools (see tests/fixtures/README.md).

``expected.json`` was written from the source images, not by reading the files back, so these
tests compare our independent readers with what MXNet was given."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from faceclean.data.datasets import open_dataset, read_rec
from faceclean.data.extraction import extract
from faceclean.training.verification import load_bin

FIXTURES = Path(__file__).parent / "fixtures"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
IM2REC = EXPECTED["im2rec"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_insightface_rec_written_by_mxnet():
    ds = read_rec(FIXTURES / "insightface" / "train.rec")
    assert ds.source == "RecordIO, insightface layout" and len(ds) == 12
    assert [sha(ds.read(i)) for i in range(12)] == EXPECTED["insightface"]["sha256"]
    assert [int(ds.identities[k]) for k in ds.labels] == EXPECTED["insightface"]["labels"]
    assert ds.path(0) == "train.rec#1" and ds.warnings == []


@pytest.mark.parametrize("name", ["single", "multi"])
def test_im2rec_recs_written_by_mxnet(name):
    ds = read_rec(FIXTURES / "im2rec" / f"{name}.rec")
    assert len(ds) == 12
    by_key = {v["key"]: v for v in IM2REC.values()}
    for i in range(12):
        want = by_key[int(ds.path(i).split("#")[1])]
        assert sha(ds.read(i)) == want["sha256"]
        assert int(ds.identities[ds.labels[i]]) == want["label"]
    if name == "multi":
        assert ds.source == "RecordIO, im2rec layout (3 labels per record, first used)"
    else:
        assert ds.source == "RecordIO, im2rec layout" and ds.warnings == []


def test_im2rec_rec_without_its_idx_is_read_by_a_scan(tmp_path):
    shutil.copy(FIXTURES / "im2rec" / "multi.rec", tmp_path / "multi.rec")
    scanned = read_rec(tmp_path / "multi.rec")
    indexed = read_rec(FIXTURES / "im2rec" / "multi.rec")
    assert "indexed 12 records by a scan" in scanned.source
    assert [scanned.path(i) for i in range(12)] == [indexed.path(i) for i in range(12)]
    assert [scanned.read(i) for i in range(12)] == [indexed.read(i) for i in range(12)]
    assert not (tmp_path / "multi.idx").exists()


@pytest.mark.parametrize("name", ["single", "multi"])
def test_im2rec_lists_written_by_mxnet(name):
    ds = open_dataset(FIXTURES / "im2rec" / f"{name}.lst", root=FIXTURES / "im2rec" / "images")
    assert ds.source == "list file, im2rec format (detected)" and len(ds) == 12
    for i in range(12):
        want = IM2REC[ds.path(i)]
        assert " " in ds.path(i) and sha(ds.read(i)) == want["sha256"]
        assert int(ds.identities[ds.labels[i]]) == want["label"]
    assert bool(ds.warnings) == (name == "multi")


def test_verification_bin_written_for_insightface():
    images, issame = load_bin(FIXTURES / "verification.bin")
    assert [sha(b) for b in images] == EXPECTED["bin"]["sha256"]
    assert issame.tolist() == EXPECTED["bin"]["issame"]


def test_extract_from_the_mxnet_rec_equals_the_image_folder(tiny_model, tmp_path):
    rec = extract(FIXTURES / "im2rec" / "single.rec", tiny_model, tmp_path / "r.parquet")
    folder = extract(FIXTURES / "im2rec" / "images", tiny_model, tmp_path / "f.parquet")
    assert rec.num_written == folder.num_written == 12
    by_sha = {}
    ds = open_dataset(FIXTURES / "im2rec" / "images")
    table = pq.read_table(tmp_path / "f.parquet")
    for p, e in zip(table["path"].to_pylist(), table["embedding"].to_pylist(), strict=True):
        by_sha[IM2REC[p]["sha256"]] = np.asarray(e)
    rds = read_rec(FIXTURES / "im2rec" / "single.rec")
    rtable = pq.read_table(tmp_path / "r.parquet")
    for i, e in enumerate(rtable["embedding"].to_pylist()):
        assert rtable["path"][i].as_py() == rds.path(i)
        assert np.abs(np.asarray(e) - by_sha[sha(rds.read(i))]).max() < 1e-6
    assert len(ds) == 12
