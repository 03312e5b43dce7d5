"""Readers for the three shapes a face training set comes in.

1. an image folder, one sub-folder per identity: ``root/<identity>/<image>``;
2. a list file (``path label``, InsightFace ``aligned<TAB>path<TAB>label`` or MXNet im2rec
   ``index<TAB>label<TAB>path``; see :mod:`faceclean.data.listfile`), paths relative to a root;
3. an MXNet RecordIO ``train.rec`` (+ ``train.idx``): InsightFace layout or plain im2rec.

Each gives a :class:`FaceDataset`: the sample paths, contiguous int64 labels ``0..K-1``, the
original identity name of every label, and ``read(i)`` for the encoded bytes of sample ``i``.
Only the listing is held in memory (as Arrow/NumPy arrays); images are read on demand.
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from faceclean.data.listfile import MAX_LABEL, parse_list
from faceclean.data.recordio import RecordReader, unpack
from faceclean.errors import FacecleanError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".webp", ".tif", ".tiff"}


@dataclass
class FaceDataset:
    """A listing of face images with identity labels.

    Attributes:
        kind: "folder", "list" or "rec".
        root: the folder that relative ``paths`` are resolved against (for "rec", the
            folder holding the .rec).
        paths: one string per sample; for "rec" it is ``"<file>.rec#<key>"``.
        labels: int64 array, contiguous ids ``0..K-1``.
        identities: the original name of each label (folder name or original label).
        warnings: problems that did not stop the listing (e.g. empty identity folders).
        source: how the input was read, for summaries (e.g. "list, im2rec format (detected)").
        unreadable: ``(path, message)`` of entries that could not even be listed (an
            unreadable identity folder); extraction reports them with the failed images.
    """

    kind: str
    root: Path
    paths: pa.StringArray
    labels: np.ndarray
    identities: list[str]
    warnings: list[str] = field(default_factory=list)
    source: str = ""
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    _rec: RecordReader | None = None
    _rec_keys: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.identities)

    def path(self, i: int) -> str:
        return self.paths[i].as_py()

    def read(self, i: int) -> bytes:
        """The encoded image bytes of sample ``i``; raises OSError if unreadable."""
        if self._rec is not None:
            return unpack(self._rec.read(int(self._rec_keys[i])))[1]
        return read_regular_file(self.root / self.path(i))

    def fingerprint(self) -> str:
        """sha256 of the listing (paths, labels, identities): equal listings, equal fingerprints."""
        h = hashlib.sha256(self.kind.encode())
        for chunk in self.paths.cast(pa.large_string()).buffers()[1:]:
            if chunk is not None:
                h.update(memoryview(chunk))
        h.update(self.labels.astype("<i8").tobytes())
        h.update("\n".join(self.identities).encode())
        return h.hexdigest()


def read_regular_file(path: str | Path) -> bytes:
    """The bytes of a regular file. FIFOs, devices and sockets are refused (reading them
    could block forever or never end), as are symlink loops; errors are FacecleanError."""
    try:
        # O_NONBLOCK: opening a FIFO with no writer would otherwise block here.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        what = "symlink loop" if e.errno == errno.ELOOP else e.strerror
        raise FacecleanError(f"cannot open: {what}", path) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = (
                "a FIFO"
                if stat.S_ISFIFO(mode)
                else "a device"
                if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "a socket"
                if stat.S_ISSOCK(mode)
                else "a folder"
                if stat.S_ISDIR(mode)
                else "not a regular file"
            )
            raise FacecleanError(f"not a regular file ({kind}), not read", path)
        with os.fdopen(fd, "rb", closefd=True) as f:
            fd = -1
            return f.read()
    except OSError as e:
        raise FacecleanError(f"cannot read: {e.strerror}", path) from None
    finally:
        if fd >= 0:
            os.close(fd)


def open_dataset(
    source: str | Path, root: str | Path | None = None, list_format: str = "auto"
) -> FaceDataset:
    """Open a folder, a list file or a ``.rec`` as a :class:`FaceDataset`.

    Args:
        source: an image folder, a list file, or a ``.rec`` file.
        root: for a list file, the folder its paths are relative to (default: the list
            file's folder). Ignored otherwise.
        list_format: for a list file, "auto" (detected from its lines), "plain",
            "insightface" or "im2rec".
    """
    source = Path(source)
    if not source.exists():
        raise FacecleanError("no such file or folder", source)
    if source.is_dir():
        return read_image_folder(source)
    if source.suffix == ".rec":
        return read_rec(source)
    if not source.is_file():
        raise FacecleanError("not a regular file or folder", source)
    return read_list_file(source, root, list_format)


def _contiguous(original: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map arbitrary integer labels to 0..K-1 in sorted order: (new labels, originals)."""
    uniques, inverse = np.unique(original, return_inverse=True)
    return inverse.astype(np.int64), uniques


def _scan(path: str | Path) -> list[os.DirEntry]:
    with os.scandir(path) as it:
        return sorted(it, key=lambda e: e.name)


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a symlink loop, say: not a folder; listed as an image that fails
        return False


def read_image_folder(root: str | Path) -> FaceDataset:
    """List ``root/<identity>/<image>``; identities sorted by name get labels 0..K-1.

    Empty identity folders are skipped and reported in ``warnings``; files directly under
    ``root`` are ignored (also reported). Every entry with an image extension is listed,
    whatever it is (a FIFO, a dangling link): reading it then fails and it is reported as a
    failure rather than silently dropped. An identity folder that cannot be listed goes to
    ``unreadable``.
    """
    root = Path(root)
    paths: list[str] = []
    labels: list[int] = []
    identities: list[str] = []
    warnings: list[str] = []
    unreadable: list[tuple[str, str]] = []
    try:
        entries = _scan(root)
    except OSError as e:
        raise FacecleanError(f"cannot list the folder: {e.strerror}", root) from None
    stray = [e.name for e in entries if not _is_dir(e)]
    if stray:
        warnings.append(f"{root}: {len(stray)} file(s) outside identity folders ignored")
    for entry in entries:
        if not _is_dir(entry):
            continue
        try:
            listing = _scan(entry.path)
        except OSError as e:
            unreadable.append((f"{entry.name}/", f"cannot list the identity folder: {e.strerror}"))
            continue
        images = [
            f.name
            for f in listing
            if os.path.splitext(f.name)[1].lower() in IMAGE_EXTENSIONS and not _is_dir(f)
        ]
        if not images:
            warnings.append(f"{entry.path}: empty identity folder (no images), skipped")
            continue
        label = len(identities)
        identities.append(entry.name)
        paths.extend(f"{entry.name}/{name}" for name in images)
        labels.extend([label] * len(images))
    if not paths:
        detail = f" ({len(unreadable)} identity folder(s) unreadable)" if unreadable else ""
        raise FacecleanError(
            f"no images found in identity sub-folders (root/<identity>/<image>){detail}", root
        )
    return FaceDataset(
        "folder",
        root,
        pa.array(paths, pa.string()),
        np.asarray(labels, np.int64),
        identities,
        warnings,
        source="image folder",
        unreadable=unreadable,
    )


def read_list_file(
    list_path: str | Path, root: str | Path | None = None, list_format: str = "auto"
) -> FaceDataset:
    """Read a list file in any layout of :mod:`faceclean.data.listfile`.

    Labels are mapped to 0..K-1 in sorted order and the original integer is kept as the
    identity name. Raises FacecleanError naming the line at fault.
    """
    list_path = Path(list_path)
    if root is not None and not Path(root).is_dir():
        # Every photo would then fail as unreadable, one by one: say it once, up front.
        raise FacecleanError("--root is not a folder (the list's paths are relative to it)", root)
    root = Path(root) if root is not None else list_path.parent
    paths, originals, used, warnings = parse_list(list_path, list_format, root.absolute())
    labels, uniques = _contiguous(np.asarray(originals, np.int64))
    how = "detected" if list_format == "auto" else "as asked"
    return FaceDataset(
        "list",
        root,
        pa.array(paths, pa.string()),
        labels,
        [str(u) for u in uniques],
        warnings,
        source=f"list file, {used} format ({how})",
    )


def _rec_label(value: float, key: int, rec_path: Path) -> int:
    if not (math.isfinite(value) and value == int(value) and 0 <= value <= MAX_LABEL):
        raise FacecleanError(
            f"record key {key}: label {value!r} is not a small non-negative integer", rec_path
        )
    return int(value)


def rec_layout(reader: RecordReader) -> tuple[str, np.ndarray]:
    """Which of the two RecordIO layouts a file uses, and its image keys.

    "insightface": record 0 is a header without an image (``flag > 0``, labels
    ``(N + 1, N + 1 + K)``), images are keys ``1..N``. "im2rec": every record is an image;
    ``flag > 0`` there means the record carries ``flag`` labels. Telling them apart by the
    header's empty payload, not by ``flag``, keeps multi-label im2rec files whole.
    """
    keys = np.asarray(reader.keys, np.int64)
    if len(keys) == 0:
        raise FacecleanError(f"{reader.idx_path.name} lists no records", reader.rec_path)
    if int(keys[0]) != 0:
        return "im2rec", keys
    header, payload = unpack(reader.read(0))
    if header.flag == 0 or len(payload) > 0:
        return "im2rec", keys
    bounds = np.asarray(header.label, np.float64).ravel()
    end = _rec_label(float(bounds[0]), 0, reader.rec_path)
    last = _rec_label(float(bounds[1]), 0, reader.rec_path) if len(bounds) > 1 else end
    image_keys = keys[(keys >= 1) & (keys < end)]
    if len(image_keys) != end - 1:
        raise FacecleanError(
            f"{reader.idx_path.name} does not match: the header announces {end - 1} images "
            f"but the index lists {len(image_keys)} of keys 1..{end - 1}",
            reader.rec_path,
        )
    outside = int((keys >= max(end, last)).sum())
    if outside:
        raise FacecleanError(
            f"the index lists {outside} record(s) past the InsightFace header's key range "
            f"0..{max(end, last) - 1}; the file is not a consistent InsightFace set",
            reader.rec_path,
        )
    return "insightface", image_keys


def read_rec(rec_path: str | Path, idx_path: str | Path | None = None) -> FaceDataset:
    """Open a ``.rec`` (with its ``.idx``, or indexed by a scan when there is none).

    Both layouts of :func:`rec_layout` are read without MXNet. Each image's label is read
    from its own record header; with several labels, the first is the identity (and a
    warning says so). Non-integral or negative labels are a FacecleanError.
    """
    rec_path = Path(rec_path)
    reader = RecordReader(rec_path, idx_path)
    layout, image_keys = rec_layout(reader)
    originals = np.empty(len(image_keys), np.int64)
    most_labels = 0
    for j, key in enumerate(image_keys):
        h = reader.read_header(int(key))
        first = float(np.asarray(h.label).ravel()[0]) if h.flag > 0 else float(h.label)
        originals[j] = _rec_label(first, int(key), rec_path)
        most_labels = max(most_labels, h.flag)
    labels, uniques = _contiguous(originals)
    warnings, source = [], f"RecordIO, {layout} layout"
    if layout == "im2rec" and most_labels > 1:
        warnings.append(
            f"{rec_path}: records carry up to {most_labels} labels; the first is the identity"
        )
        source += f" ({most_labels} labels per record, first used)"
    if reader.scanned:
        note = f"no {reader.idx_path.name}: indexed {len(reader.offsets)} records by a scan"
        warnings.append(f"{rec_path}: {note}")
        source += f"; {note}"
    paths = pa.array([f"{rec_path.name}#{k}" for k in image_keys], pa.string())
    return FaceDataset(
        "rec",
        rec_path.parent,
        paths,
        labels,
        [str(u) for u in uniques],
        warnings,
        source=source,
        _rec=reader,
        _rec_keys=image_keys,
    )


# Open .rec readers by file, so that reading many images does not re-parse the .idx.
_REC_READERS: dict[Path, RecordReader] = {}


def read_image_bytes(root: str | Path, path: str) -> bytes:
    """The encoded bytes of one stored ``path`` (relative to ``root``, or ``file.rec#key``)."""
    name, sep, key = path.rpartition("#")
    if sep and name.endswith(".rec") and key.isdigit():
        rec_path = Path(root) / name
        reader = _REC_READERS.get(rec_path)
        if reader is None:
            reader = _REC_READERS[rec_path] = RecordReader(rec_path)
        return unpack(reader.read(int(key)))[1]
    return read_regular_file(Path(root) / path)
