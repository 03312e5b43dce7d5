import struct

import numpy as np
import pytest

from faceclean.data.datasets import read_rec
from faceclean.data.recordio import (
    MAGIC,
    IRHeader,
    RecordReader,
    RecordWriter,
    pack,
    unpack,
    write_face_rec,
)
from faceclean.errors import FacecleanError


def test_pack_unpack_scalar_and_vector_labels():
    h, payload = unpack(pack(IRHeader(0, 7.0, 3, 0), b"jpegbytes"))
    assert (h.flag, h.label, h.id, h.id2, payload) == (0, 7.0, 3, 0, b"jpegbytes")
    h, payload = unpack(pack(IRHeader(0, np.array([5, 9], np.float32), 1, 2), b"x"))
    assert h.flag == 2 and list(h.label) == [5.0, 9.0] and payload == b"x"


def test_bytes_on_disk_follow_the_mxnet_layout(tmp_path):
    # IRHeader is <IfQQ: flag, label, id, id2 (24 bytes), then the image bytes.
    body = pack(IRHeader(0, 3.0, 1, 0), b"abcde")
    assert body == struct.pack("<IfQQ", 0, 3.0, 1, 0) + b"abcde"
    with RecordWriter(tmp_path / "a.rec") as w:
        w.write(1, body)
    raw = (tmp_path / "a.rec").read_bytes()
    # magic, lrecord = (cflag 0 << 29) | length, data, zero padding to 4 bytes.
    assert raw == struct.pack("<II", MAGIC, len(body)) + body + b"\0" * ((-len(body)) % 4)
    assert (tmp_path / "a.idx").read_text() == "1\t0\n"


def test_payload_containing_the_magic_word_is_split_and_rejoined(tmp_path):
    magic = struct.pack("<I", MAGIC)
    body = b"AAAA" + magic + b"BBBBBB" + magic + b"C"
    with RecordWriter(tmp_path / "m.rec") as w:
        w.write(0, body)
        w.write(1, b"plain")
    raw = (tmp_path / "m.rec").read_bytes()
    first = struct.unpack("<II", raw[:8])
    assert first == (MAGIC, (1 << 29) | 4)  # cflag 1: the first part, "AAAA"
    with RecordReader(tmp_path / "m.rec") as r:
        assert r.read(0) == body
        assert r.read(1) == b"plain"


def test_face_rec_roundtrip_has_insightface_header_and_identity_records(tmp_path):
    items = [(10, b"img-a"), (10, b"img-b"), (42, b"img-c"), (7, b"img-d")]
    assert write_face_rec(tmp_path / "train.rec", items) == 4
    with RecordReader(tmp_path / "train.rec") as r:
        header = r.read_header(0)
        assert header.flag == 2 and list(header.label) == [5.0, 8.0]
        ranges = [list(r.read_header(k).label) for k in (5, 6, 7)]
        assert ranges == [[4.0, 5.0], [1.0, 3.0], [3.0, 4.0]]  # labels 7, 10, 42
    ds = read_rec(tmp_path / "train.rec")
    assert len(ds) == 4
    assert ds.identities == ["7", "10", "42"]
    assert ds.labels.tolist() == [1, 1, 2, 0]
    assert [ds.read(i) for i in range(4)] == [b"img-a", b"img-b", b"img-c", b"img-d"]
    assert ds.path(2) == "train.rec#3"


def test_non_consecutive_labels_are_refused_and_nothing_is_left(tmp_path):
    with pytest.raises(ValueError, match="not consecutive"):
        write_face_rec(tmp_path / "t.rec", [(1, b"a"), (2, b"b"), (1, b"c")])
    assert list(tmp_path.iterdir()) == []


def test_idx_that_does_not_match_the_rec_is_an_error(tmp_path):
    write_face_rec(tmp_path / "train.rec", [(0, b"a" * 10), (1, b"b" * 10)])
    lines = (tmp_path / "train.idx").read_text().splitlines()
    lines[1] = lines[1].split("\t")[0] + "\t6"  # an offset inside another record
    (tmp_path / "train.idx").write_text("\n".join(lines) + "\n")
    with pytest.raises(FacecleanError, match=r"train\.rec: train\.idx does not match"):
        read_rec(tmp_path / "train.rec")


def test_idx_with_a_garbage_line_names_the_line(tmp_path):
    write_face_rec(tmp_path / "train.rec", [(0, b"a")])
    (tmp_path / "train.idx").write_text("0\t0\nnot numbers\n")
    with pytest.raises(FacecleanError, match=r"train\.idx: line 2"):
        read_rec(tmp_path / "train.rec")


def test_missing_idx_is_named(tmp_path):
    write_face_rec(tmp_path / "train.rec", [(0, b"a")])
    (tmp_path / "train.idx").unlink()
    with pytest.raises(FacecleanError, match=r"train\.idx: file not found"):
        read_rec(tmp_path / "train.rec")
