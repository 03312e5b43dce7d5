"""Which images the review app may show, and their thumbnails, made lazily and cached.

The app serves nothing but thumbnails of images under the dataset root: a requested path
is resolved (``..`` and symlinks followed) and refused unless it lands strictly inside
that root. A thumbnail is made on its first request and cached as a JPEG in
``CLEAN_DIR/.review/thumbs/`` (the only place it writes besides ``review.parquet``), so a
page costs the images it shows, never the dataset's size.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

from PIL import Image

from faceclean.data.datasets import read_image_bytes
from faceclean.data.preprocess import ImageError, decode_image
from faceclean.data.store import atomic_path
from faceclean.errors import FacecleanError

SIZE = 112  # pixels, square: the aligned face size, shown smaller in the strips


def inside(root: Path, rel: str) -> Path | None:
    """``root / rel`` resolved, or None when it escapes ``root`` (``..``, an absolute
    path, a symlink pointing out) or is malformed. For an image inside a ``.rec``
    (``train.rec#12``) the ``.rec`` file is what must be inside."""
    if not rel or "\x00" in rel:
        return None
    name, sep, key = rel.rpartition("#")
    if sep and name.endswith(".rec") and key.isdigit():
        rel = name
    base = root.resolve()
    target = (base / rel).resolve()
    return target if base in target.parents else None


def placeholder() -> bytes:
    """A dark red square: an image that is missing or cannot be decoded."""
    buf = io.BytesIO()
    Image.new("RGB", (SIZE, SIZE), (80, 0, 0)).save(buf, format="JPEG")
    return buf.getvalue()


class Thumbnails:
    """JPEG thumbnails of the images under ``root``, cached in ``cache``."""

    def __init__(self, root: str | Path | None, cache: str | Path):
        self.root = Path(root) if root else None
        self.cache = Path(cache)
        self._missing = placeholder()

    def get(self, rel: str) -> bytes | None:
        """The thumbnail's bytes; the placeholder for an unreadable image; None when
        ``rel`` is not under the dataset root (the caller answers 404)."""
        if self.root is None:
            return self._missing
        if inside(self.root, rel) is None:
            return None
        digest = hashlib.sha1(rel.encode("utf-8", "surrogatepass")).hexdigest()
        cached = self.cache / digest[:2] / f"{digest}.jpg"
        if cached.is_file():
            return cached.read_bytes()
        try:
            img = decode_image(read_image_bytes(self.root, rel))
        except (OSError, ImageError, FacecleanError, ValueError):
            return self._missing  # not cached: the file may be fixed meanwhile
        img.thumbnail((SIZE, SIZE))
        buf = io.BytesIO()
        img.convert("RGB").save(buf, format="JPEG", quality=85)
        data = buf.getvalue()
        try:
            os.makedirs(cached.parent, exist_ok=True)
            with atomic_path(cached) as tmp:
                tmp.write_bytes(data)
        except OSError:  # a read-only or full clean folder: serve it uncached
            pass
        return data
