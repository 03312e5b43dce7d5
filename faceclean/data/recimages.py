"""Images for a ``.rec`` that training tools read (InsightFace arcface_torch and MXNet loaders).

Those loaders decode each record with OpenCV (``mx.image.imdecode``) and feed the pixels to
the network as they are: every image must already be at the model's input size. So an
image that is already a plain 8-bit JPEG or PNG at that size, upright, is stored byte for
byte; anything else (PGM, BMP, another size, a rotated phone JPEG, a 16-bit PNG) is decoded
and fitted exactly as ``faceclean extract`` did (:func:`faceclean.data.preprocess.fit_image`)
and stored as JPEG quality 95. The ``property`` file beside the ``.rec`` says
``num_classes,height,width``, as InsightFace's face sets do.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from faceclean.data.preprocess import decode_image, fit_image
from faceclean.data.store import atomic_path

JPEG_QUALITY = 95
_ORIENTATION = 0x0112


def _copyable(data: bytes, height: int, width: int) -> bool:
    """Whether ``data`` is a JPEG/PNG that OpenCV decodes to ``height`` x ``width`` x 3
    with the pixels faceclean saw: 8-bit RGB or grey, no EXIF rotation, right size."""
    try:
        img = Image.open(io.BytesIO(data))
    except Exception:  # undecodable: let decode_image give the precise message
        return False
    if img.format not in ("JPEG", "PNG") or img.size != (width, height):
        return False
    if img.mode not in ("RGB", "L"):
        return False  # palette, alpha, 16-bit, CMYK: decoders differ, re-encode
    return img.getexif().get(_ORIENTATION, 1) == 1


def rec_image(data: bytes, height: int, width: int, fit: str) -> tuple[bytes, bool]:
    """The bytes to store for one image and whether they were re-encoded.

    Raises :class:`faceclean.data.preprocess.ImageError` for data that cannot be decoded.
    """
    if _copyable(data, height, width):
        return data, False
    img = fit_image(decode_image(data), height, width, fit)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=JPEG_QUALITY)
    return buf.getvalue(), True


def write_property(folder: str | Path, num_classes: int, height: int, width: int) -> Path:
    """Write InsightFace's ``property`` file (``num_classes,height,width``) atomically."""
    path = Path(folder) / "property"
    with atomic_path(path) as tmp:
        tmp.write_text(f"{num_classes},{height},{width}\n")
    return path
