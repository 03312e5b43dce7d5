"""MXNet RecordIO (``.rec`` + ``.idx``) read and written without MXNet.

Byte layout (dmlc-core ``recordio.h``, MXNet ``recordio.py``), little-endian:

* a record on disk is ``magic:uint32 = 0xced7230a``, ``lrecord:uint32``, payload, then zero
  padding up to a multiple of 4 bytes. ``lrecord`` packs a continuation flag in its top 3 bits
  (``cflag = lrecord >> 29``) and the payload length in the low 29 bits. A payload that itself
  contains the magic word at a 4-byte aligned offset is split there into parts with cflag
  1 (first), 2 (middle), 3 (last); the magic word is dropped from the parts and put back when
  reading. cflag 0 is a whole record.
* the ``.idx`` file is text, one ``key<TAB>byte_offset`` line per record.
* an image record's payload starts with MXNet's ``IRHeader`` = ``flag:uint32, label:float32,
  id:uint64, id2:uint64`` (24 bytes). When ``flag > 0`` the header's label is ignored and
  ``flag`` float32 labels follow the header. The rest is the encoded image (JPEG/PNG).

InsightFace face sets (MS1MV2, Glint360K, WebFace) add: record 0 is a header with ``flag > 0``
and labels ``(N + 1, N + 1 + K)``: images are keys ``1..N``, identity records are keys
``N+1 .. N+K``, each with labels ``(start, end)``, the half-open key range of its images.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from faceclean.errors import FacecleanError

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_HEADER = struct.Struct("<IfQQ")
_LENGTH_MASK = (1 << 29) - 1


class IRHeader(NamedTuple):
    """MXNet's image-record header. ``label`` is a float, or an array when ``flag > 0``."""

    flag: int
    label: float | np.ndarray
    id: int
    id2: int


def pack(header: IRHeader, payload: bytes) -> bytes:
    """Serialise an IRHeader and payload into one record body (what ``.rec`` stores)."""
    label = header.label
    if isinstance(label, (int, float, np.floating, np.integer)):
        return _HEADER.pack(0, float(label), header.id, header.id2) + payload
    labels = np.asarray(label, dtype="<f4")
    return _HEADER.pack(labels.size, 0.0, header.id, header.id2) + labels.tobytes() + payload


def unpack(record: bytes) -> tuple[IRHeader, bytes]:
    """Split a record body into its IRHeader and the remaining payload (the image bytes)."""
    if len(record) < _HEADER.size:
        raise ValueError(f"record of {len(record)} bytes is shorter than an IRHeader")
    flag, label, id_, id2 = _HEADER.unpack_from(record)
    body = record[_HEADER.size :]
    if flag > 0:
        if len(body) < 4 * flag:
            raise ValueError(f"record header announces {flag} labels but is truncated")
        labels = np.frombuffer(body[: 4 * flag], dtype="<f4").copy()
        return IRHeader(flag, labels, id_, id2), body[4 * flag :]
    return IRHeader(flag, label, id_, id2), body


def _encode_parts(record: bytes) -> bytes:
    """The on-disk bytes of one record, split where the payload holds the magic word."""
    out = bytearray()
    start = 0
    cuts = [i for i in range(0, len(record) - 3, 4) if record[i : i + 4] == _MAGIC_BYTES]
    for cut in cuts:
        out += _frame(record[start:cut], 1 if start == 0 else 2)
        start = cut + 4
    out += _frame(record[start:], 3 if cuts else 0)
    return bytes(out)


def _frame(part: bytes, cflag: int) -> bytes:
    if len(part) > _LENGTH_MASK:
        raise ValueError("RecordIO records must be shorter than 2**29 bytes")
    pad = (-len(part)) % 4
    return _MAGIC_BYTES + struct.pack("<I", (cflag << 29) | len(part)) + part + b"\0" * pad


class RecordWriter:
    """Write an indexed RecordIO pair atomically.

    Records go to ``<rec>.tmp`` / ``<idx>.tmp``; both are renamed into place by ``close()``
    (or leaving the ``with`` block without an exception), so a crash never leaves a ``.rec``
    that looks complete. ``abort()`` removes the temporary files.
    """

    def __init__(self, rec_path: str | Path, idx_path: str | Path | None = None):
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path else self.rec_path.with_suffix(".idx")
        self._rec_tmp = self.rec_path.with_name(self.rec_path.name + ".tmp")
        self._idx_tmp = self.idx_path.with_name(self.idx_path.name + ".tmp")
        self._rec = open(self._rec_tmp, "wb")
        self._index: dict[int, int] = {}
        self._sizes: dict[int, int] = {}

    def write(self, key: int, record: bytes) -> None:
        """Append one record body under integer ``key``."""
        if key in self._index:
            raise ValueError(f"duplicate record key {key}")
        encoded = _encode_parts(record)
        self._index[key], self._sizes[key] = self._rec.tell(), len(encoded)
        self._rec.write(encoded)

    def overwrite(self, key: int, record: bytes) -> None:
        """Rewrite an already written record in place; the new encoding must be as long."""
        encoded = _encode_parts(record)
        if len(encoded) != self._sizes[key]:
            raise ValueError("an overwritten record must keep its encoded size")
        end = self._rec.tell()
        self._rec.seek(self._index[key])
        self._rec.write(encoded)
        self._rec.seek(end)

    def close(self) -> None:
        self._rec.close()
        with open(self._idx_tmp, "w") as idx:
            for key in sorted(self._index):
                idx.write(f"{key}\t{self._index[key]}\n")
        os.replace(self._rec_tmp, self.rec_path)
        os.replace(self._idx_tmp, self.idx_path)

    def abort(self) -> None:
        self._rec.close()
        for tmp in (self._rec_tmp, self._idx_tmp):
            tmp.unlink(missing_ok=True)

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class RecordReader:
    """Random access to a RecordIO file. Thread-safe: reads use ``os.pread``.

    The ``.idx`` beside the ``.rec`` gives each key's offset. Without one, the file is
    indexed by one sequential scan (``scanned`` is then True): keys are the records' header
    ids when those are unique (im2rec and InsightFace write id = key), else their positions.
    """

    def __init__(self, rec_path: str | Path, idx_path: str | Path | None = None):
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path else self.rec_path.with_suffix(".idx")
        if not self.rec_path.is_file():
            raise FacecleanError("file not found", self.rec_path)
        self._size = self.rec_path.stat().st_size
        self._fd = os.open(self.rec_path, os.O_RDONLY)
        try:
            self.scanned = not self.idx_path.exists()
            if self.scanned:
                self.offsets = self._scan()
            else:
                self.offsets = _read_index(self.idx_path, self._size)
                self._check_covers_the_file()
        except BaseException:
            os.close(self._fd)
            raise

    @property
    def keys(self) -> list[int]:
        return sorted(self.offsets)

    def _parts(self, pos: int, what: str) -> tuple[list[bytes], int]:
        """The parts of the record starting at byte ``pos`` and the offset just after it."""
        parts: list[bytes] = []
        while True:
            head = os.pread(self._fd, 8, pos)
            if len(head) < 8 or head[:4] != _MAGIC_BYTES:
                raise FacecleanError(
                    f"{what} at byte offset {pos} does not start with the RecordIO magic number",
                    self.rec_path,
                )
            lrec = struct.unpack("<I", head[4:])[0]
            cflag, length = lrec >> 29, lrec & _LENGTH_MASK
            if (cflag in (2, 3)) != bool(parts):
                raise FacecleanError(
                    f"{what} at byte offset {pos} has continuation flag {cflag} out of order",
                    self.rec_path,
                )
            data = os.pread(self._fd, length, pos + 8)
            if len(data) < length:
                raise FacecleanError(f"{what} is truncated", self.rec_path)
            parts.append(data)
            pos += 8 + length + (-length) % 4
            if cflag in (0, 3):
                return parts, pos

    def _scan(self) -> dict[int, int]:
        starts: list[int] = []
        ids: list[int] = []
        pos = 0
        while pos < self._size:
            parts, end = self._parts(pos, f"record {len(starts)} (no {self.idx_path.name}, scan)")
            body = parts[0] if len(parts[0]) >= _HEADER.size else _MAGIC_BYTES.join(parts)
            ids.append(_HEADER.unpack_from(body)[2] if len(body) >= _HEADER.size else -1)
            starts.append(pos)
            pos = end
        keys = ids if len(set(ids)) == len(ids) and min(ids, default=0) >= 0 else range(len(ids))
        return dict(zip(keys, starts, strict=True))

    def _check_covers_the_file(self) -> None:
        """An index that stops short of the file's end would silently hide records."""
        if not self.offsets:
            return
        last_key = max(self.offsets, key=self.offsets.get)
        _, end = self._parts(self.offsets[last_key], f"{self.idx_path.name} record key {last_key}")
        if end < self._size:
            raise FacecleanError(
                f"{self.idx_path.name} is incomplete: its records end at byte {end} but the .rec "
                f"has {self._size} bytes (delete the .idx to have the .rec indexed by a scan)",
                self.rec_path,
            )

    def read(self, key: int) -> bytes:
        """The body of record ``key``, multi-part records joined back together."""
        if key not in self.offsets:
            raise FacecleanError(f"record key {key} is not in {self.idx_path.name}", self.rec_path)
        what = f"{self.idx_path.name} does not match: record key {key}"
        return _MAGIC_BYTES.join(self._parts(self.offsets[key], what)[0])

    def read_header(self, key: int) -> IRHeader:
        """Only the IRHeader of record ``key`` (reads a few dozen bytes)."""
        pos = self.offsets.get(key)
        head = os.pread(self._fd, 8 + _HEADER.size + 16, pos) if pos is not None else b""
        if len(head) < 8 + _HEADER.size or head[:4] != _MAGIC_BYTES:
            return unpack(self.read(key))[0]  # raises the precise error
        lrec = struct.unpack("<I", head[4:8])[0]
        flag = _HEADER.unpack_from(head, 8)[0]
        length = lrec & _LENGTH_MASK
        if lrec >> 29 or flag > 4 or length < _HEADER.size + 4 * flag:
            return _unpack_checked(self.read(key), key, self.rec_path)[0]
        return unpack(head[8 : 8 + _HEADER.size + 4 * flag])[0]

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> RecordReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _unpack_checked(record: bytes, key: int, path: Path) -> tuple[IRHeader, bytes]:
    try:
        return unpack(record)
    except ValueError as e:
        raise FacecleanError(f"record key {key}: {e}", path) from None


def _read_index(idx_path: Path, rec_size: int) -> dict[int, int]:
    """Parse a text ``key<TAB>offset`` index; anything else is a FacecleanError."""
    try:
        data = idx_path.read_bytes()
    except OSError as e:
        raise FacecleanError(f"cannot read the index: {e.strerror}", idx_path) from None
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise FacecleanError(
            "not a RecordIO index (binary data; expected 'key<TAB>offset' text lines)", idx_path
        ) from None
    offsets: dict[int, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            if len(fields) != 2:
                raise ValueError
            key, offset = int(fields[0]), int(fields[1])
        except ValueError:
            raise FacecleanError(
                f"line {lineno}: expected 'key<TAB>offset', got {line.strip()[:60]!r}", idx_path
            ) from None
        if not 0 <= offset < rec_size or offset % 4:
            raise FacecleanError(
                f"line {lineno}: offset {offset} is not a record start in a {rec_size}-byte .rec",
                idx_path,
            )
        if key in offsets:
            raise FacecleanError(f"line {lineno}: key {key} is listed twice", idx_path)
        offsets[key] = offset
    return offsets


def write_face_rec(
    rec_path: str | Path, items: Iterable[tuple[int, bytes]], idx_path: str | Path | None = None
) -> int:
    """Write an InsightFace-layout face set: header record, image records, identity records.

    Args:
        rec_path: the ``.rec`` to create (its ``.idx`` goes beside it unless ``idx_path``).
        items: ``(label, encoded_image_bytes)`` pairs, grouped by label (all images of one
            label consecutive); labels are written as float32 as InsightFace does.

    Returns:
        The number of image records written. The files appear only when complete.
    """
    ranges: dict[int, list[int]] = {}
    with RecordWriter(rec_path, idx_path) as writer:
        # Record 0's size does not depend on its values, so write it now and fix it up later,
        # keeping it first in the file for sequential readers.
        writer.write(0, pack(IRHeader(2, np.zeros(2, np.float32), 0, 0), b""))
        key, previous = 1, None
        for label, image in items:
            label = int(label)
            if label != previous and label in ranges:
                raise ValueError(f"images of label {label} are not consecutive")
            ranges.setdefault(label, [key, key])[1] = key + 1
            writer.write(key, pack(IRHeader(0, float(label), key, 0), image))
            key, previous = key + 1, label
        n_images = key - 1
        for label in sorted(ranges):
            start, end = ranges[label]
            writer.write(key, pack(IRHeader(2, np.array([start, end], np.float32), key, 0), b""))
            key += 1
        header = IRHeader(2, np.array([n_images + 1, key], np.float32), 0, 0)
        writer.overwrite(0, pack(header, b""))
    return n_images
