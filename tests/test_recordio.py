import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    lines[1] = lines[1].split("\t")[0] + "\t8"  # an offset inside another record
    (tmp_path / "train.idx").write_text("\n".join(lines) + "\n")
    with pytest.raises(FacecleanError, match=r"train\.rec: train\.idx does not match"):
        read_rec(tmp_path / "train.rec")


def test_idx_with_a_garbage_line_names_the_line(tmp_path):
    write_face_rec(tmp_path / "train.rec", [(0, b"a")])
    (tmp_path / "train.idx").write_text("0\t0\nnot numbers\n")
    with pytest.raises(FacecleanError, match=r"train\.idx: line 2"):
        read_rec(tmp_path / "train.rec")


def _im2rec(path, labels_per_image, n_labels=1, ids=None):
    """An im2rec-style .rec (+ .idx): every record an image, key = header id = index."""
    with RecordWriter(path) as w:
        for i, lab in enumerate(labels_per_image):
            key = i if ids is None else ids[i]
            label = float(lab) if n_labels == 1 else np.arange(n_labels, dtype=np.float32) + lab
            w.write(key, pack(IRHeader(0, label, key, 0), f"image-{i}".encode()))


def test_multi_label_im2rec_is_not_mistaken_for_the_insightface_header(tmp_path):
    # Record 0 has flag 3 and labels (4, 5, 6): the InsightFace reading would take it as a
    # header announcing images 1..3 and silently drop 9 of 12 images.
    _im2rec(tmp_path / "multi.rec", [4, 4, 4, 1, 1, 1, 2, 2, 2, 0, 0, 0], n_labels=3)
    ds = read_rec(tmp_path / "multi.rec")
    assert len(ds) == 12 and ds.source.startswith("RecordIO, im2rec layout (3 labels")
    assert ds.identities == ["0", "1", "2", "4"]
    assert [ds.read(i) for i in (0, 11)] == [b"image-0", b"image-11"]
    assert any("first is the identity" in w for w in ds.warnings)


def test_single_label_im2rec_every_record_is_an_image(tmp_path):
    _im2rec(tmp_path / "single.rec", [3, 3, 0])
    ds = read_rec(tmp_path / "single.rec")
    assert ds.source == "RecordIO, im2rec layout" and ds.labels.tolist() == [1, 1, 0]
    assert ds.path(0) == "single.rec#0"


def test_rec_without_idx_is_indexed_by_a_scan(tmp_path):
    items = [(10, b"img-a" * 300), (10, struct.pack("<I", MAGIC) * 3), (42, b"img-c")]
    write_face_rec(tmp_path / "train.rec", items)
    with_idx = read_rec(tmp_path / "train.rec")
    (tmp_path / "train.idx").unlink()
    ds = read_rec(tmp_path / "train.rec")
    assert "indexed 6 records by a scan" in ds.source
    assert [ds.read(i) for i in range(3)] == [with_idx.read(i) for i in range(3)]
    assert ds.labels.tolist() == with_idx.labels.tolist()
    assert not (tmp_path / "train.idx").exists()  # the scan writes nothing
    # im2rec shuffles: record order differs from key order; keys come from the header ids.
    _im2rec(tmp_path / "shuf.rec", [5, 6, 7], ids=[2, 0, 1])
    (tmp_path / "shuf.idx").unlink()
    ds = read_rec(tmp_path / "shuf.rec")
    assert ds.path(0) == "shuf.rec#0" and ds.read(0) == b"image-1"


@pytest.mark.parametrize(
    ("idx", "message"),
    [
        (b"\x00\x01\xff\xfe binary", r"train\.idx: not a RecordIO index \(binary data"),
        (b"0\t0\n1\t99999\n", r"train\.idx: line 2: offset 99999 is not a record start"),
        (b"0\t0\n0\t0\n", r"train\.idx: line 2: key 0 is listed twice"),
        (b"0\t0\n", r"train\.rec: train\.idx is incomplete"),
        (b"0\t0 extra\n", r"train\.idx: line 1: expected 'key<TAB>offset'"),
    ],
)
def test_corrupt_idx_is_a_named_error(tmp_path, idx, message):
    write_face_rec(tmp_path / "train.rec", [(0, b"a" * 40), (1, b"b" * 40)])
    (tmp_path / "train.idx").write_bytes(idx)
    with pytest.raises(FacecleanError, match=message):
        read_rec(tmp_path / "train.rec")


def test_garbage_rec_without_idx_is_a_named_error(tmp_path):
    (tmp_path / "junk.rec").write_bytes(b"not a recordio file at all")
    with pytest.raises(FacecleanError, match=r"junk\.rec: record 0 .* magic number"):
        read_rec(tmp_path / "junk.rec")


def test_non_integral_rec_label_is_named(tmp_path):
    _im2rec(tmp_path / "f.rec", [1.5])
    with pytest.raises(FacecleanError, match=r"f\.rec: record key 0: label 1\.5 is not a small"):
        read_rec(tmp_path / "f.rec")


# Property-based: any labels, any payloads (including the magic word, which splits a record
# into parts), either layout, with or without .idx: the reader gives back exactly what was
# written, never fewer records.
_payload = st.lists(
    st.sampled_from([b"x", b"\x0a\x23\xd7\xce", b"\0\0\0", b"jpeg"]), min_size=0, max_size=6
).map(b"".join)


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    labels=st.lists(st.integers(0, 2**24), min_size=1, max_size=10),
    payloads=st.lists(_payload, min_size=10, max_size=10),
    n_labels=st.integers(1, 5),
    layout=st.sampled_from(["insightface", "im2rec"]),
    drop_idx=st.booleans(),
)
def test_rec_reader_gives_back_what_was_written(
    tmp_path, labels, payloads, n_labels, layout, drop_idx
):
    rec = tmp_path / f"p-{layout}.rec"
    images = [b"I" + payloads[i] for i in range(len(labels))]  # an image is never empty
    if layout == "insightface":
        order = sorted(range(len(labels)), key=lambda i: labels[i])  # grouped by label
        write_face_rec(rec, [(labels[i], images[i]) for i in order])
        labels, images = [labels[i] for i in order], [images[i] for i in order]
    else:
        with RecordWriter(rec) as w:
            for i, lab in enumerate(labels):
                label = np.asarray([lab] + [7] * (n_labels - 1), np.float32)
                header = IRHeader(0, float(lab) if n_labels == 1 else label, i, 0)
                w.write(i, pack(header, images[i]))
    if drop_idx:
        rec.with_suffix(".idx").unlink()
    ds = read_rec(rec)
    assert ds.source.startswith(f"RecordIO, {layout} layout")
    assert [ds.read(i) for i in range(len(ds))] == images
    assert [int(ds.identities[k]) for k in ds.labels] == labels
