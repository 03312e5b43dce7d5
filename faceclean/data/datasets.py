"""Readers for the three shapes a face training set comes in.

1. an image folder, one sub-folder per identity: ``root/<identity>/<image>``;
2. a list file of ``path label`` lines (FaceX-Zoo / InsightFace), paths relative to a root;
3. an InsightFace MXNet RecordIO pair ``train.rec`` + ``train.idx``.

Each gives a :class:`FaceDataset`: the sample paths, contiguous int64 labels ``0..K-1``, the
original identity name of every label, and ``read(i)`` for the encoded bytes of sample ``i``.
Only the listing is held in memory (as Arrow/NumPy arrays); images are read on demand.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

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
    """

    kind: str
    root: Path
    paths: pa.StringArray
    labels: np.ndarray
    identities: list[str]
    warnings: list[str] = field(default_factory=list)
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
        with open(self.root / self.path(i), "rb") as f:
            return f.read()

    def fingerprint(self) -> str:
        """sha256 of the listing (paths, labels, identities): equal listings, equal fingerprints."""
        h = hashlib.sha256(self.kind.encode())
        for chunk in self.paths.cast(pa.large_string()).buffers()[1:]:
            if chunk is not None:
                h.update(memoryview(chunk))
        h.update(self.labels.astype("<i8").tobytes())
        h.update("\n".join(self.identities).encode())
        return h.hexdigest()


def open_dataset(source: str | Path, root: str | Path | None = None) -> FaceDataset:
    """Open a folder, a list file or a ``.rec`` as a :class:`FaceDataset`.

    Args:
        source: an image folder, a ``path label`` list file, or a ``.rec`` file.
        root: for a list file, the folder its paths are relative to (default: the list
            file's folder). Ignored otherwise.
    """
    source = Path(source)
    if not source.exists():
        raise FacecleanError("no such file or folder", source)
    if source.is_dir():
        return read_image_folder(source)
    if source.suffix == ".rec":
        return read_rec(source)
    return read_list_file(source, root)


def _contiguous(original: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map arbitrary integer labels to 0..K-1 in sorted order: (new labels, originals)."""
    uniques, inverse = np.unique(original, return_inverse=True)
    return inverse.astype(np.int64), uniques


def read_image_folder(root: str | Path) -> FaceDataset:
    """List ``root/<identity>/<image>``; identities sorted by name get labels 0..K-1.

    Empty identity folders are skipped and reported in ``warnings``; files directly under
    ``root`` are ignored (also reported).
    """
    root = Path(root)
    paths: list[str] = []
    labels: list[int] = []
    identities: list[str] = []
    warnings: list[str] = []
    entries = sorted(os.scandir(root), key=lambda e: e.name)
    stray = [e.name for e in entries if e.is_file()]
    if stray:
        warnings.append(f"{root}: {len(stray)} file(s) outside identity folders ignored")
    for entry in entries:
        if not entry.is_dir():
            continue
        images = sorted(
            f.name
            for f in os.scandir(entry.path)
            if f.is_file() and os.path.splitext(f.name)[1].lower() in IMAGE_EXTENSIONS
        )
        if not images:
            warnings.append(f"{entry.path}: empty identity folder (no images), skipped")
            continue
        label = len(identities)
        identities.append(entry.name)
        paths.extend(f"{entry.name}/{name}" for name in images)
        labels.extend([label] * len(images))
    if not paths:
        raise FacecleanError(
            "no images found in identity sub-folders (root/<identity>/<image>)", root
        )
    return FaceDataset(
        "folder",
        root,
        pa.array(paths, pa.string()),
        np.asarray(labels, np.int64),
        identities,
        warnings,
    )


def read_list_file(list_path: str | Path, root: str | Path | None = None) -> FaceDataset:
    """Read ``path label`` lines (whitespace separated; blank and ``#`` lines skipped).

    Labels must be integers; they are mapped to 0..K-1 in sorted order and the original
    integer is kept as the identity name. Raises FacecleanError naming the line at fault.
    """
    list_path = Path(list_path)
    root = Path(root) if root is not None else list_path.parent
    paths: list[str] = []
    originals: list[int] = []
    try:
        f = open(list_path, encoding="utf-8")
    except OSError as e:
        raise FacecleanError(f"cannot read list file: {e.strerror}", list_path) from None
    with f:
        try:
            for lineno, line in enumerate(f, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                fields = line.rsplit(maxsplit=1)
                if len(fields) != 2:
                    raise FacecleanError(
                        f"line {lineno}: expected 'path label', got {line[:80]!r}", list_path
                    )
                try:
                    label = int(fields[1])
                except ValueError:
                    raise FacecleanError(
                        f"line {lineno}: label {fields[1]!r} is not an integer", list_path
                    ) from None
                paths.append(fields[0])
                originals.append(label)
        except UnicodeDecodeError:
            raise FacecleanError("not a text list file (not UTF-8)", list_path) from None
    if not paths:
        raise FacecleanError("list file has no 'path label' lines", list_path)
    labels, uniques = _contiguous(np.asarray(originals, np.int64))
    return FaceDataset(
        "list", root, pa.array(paths, pa.string()), labels, [str(u) for u in uniques]
    )


def read_rec(rec_path: str | Path, idx_path: str | Path | None = None) -> FaceDataset:
    """Open an InsightFace ``train.rec``/``train.idx`` pair (no MXNet needed).

    With an InsightFace header record (key 0, ``flag > 0``) the images are keys
    ``1 .. header.label[0] - 1``; without one, every key is an image. Each image's label is
    read from its own record header (the first label when it carries several).
    """
    reader = RecordReader(rec_path, idx_path)
    keys = np.asarray(reader.keys, np.int64)
    if len(keys) == 0:
        raise FacecleanError(f"{reader.idx_path.name} lists no records", rec_path)
    header = reader.read_header(int(keys[0]))
    if int(keys[0]) == 0 and header.flag > 0:
        end = int(np.asarray(header.label).ravel()[0])
        image_keys = keys[(keys >= 1) & (keys < end)]
        if len(image_keys) != end - 1:
            raise FacecleanError(
                f"{reader.idx_path.name} does not match: the header announces {end - 1} images "
                f"but the index lists {len(image_keys)} of keys 1..{end - 1}",
                rec_path,
            )
    else:
        image_keys = keys
    originals = np.empty(len(image_keys), np.int64)
    for j, key in enumerate(image_keys):
        h = reader.read_header(int(key))
        originals[j] = int(np.asarray(h.label).ravel()[0]) if h.flag > 0 else int(h.label)
    labels, uniques = _contiguous(originals)
    name = Path(rec_path).name
    paths = pa.array([f"{name}#{k}" for k in image_keys], pa.string())
    return FaceDataset(
        "rec",
        Path(rec_path).parent,
        paths,
        labels,
        [str(u) for u in uniques],
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
    with open(Path(root) / path, "rb") as f:
        return f.read()
