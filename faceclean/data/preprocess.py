"""Image decoding and the explicit preprocessing a face model expects.

Nothing here is guessed: the channel order, mean, std (in 0-255 pixel units, per channel in
the model's channel order), input size and how a wrongly sized image is fitted are all
stated in a :class:`Preprocessing`, which is recorded in every embedding file.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageOps

# Pixel-unit presets: x_model = (x_pixel - mean) / std, channel by channel.
PRESETS: dict[str, dict] = {
    # InsightFace arcface_torch / model zoo: RGB, (x - 127.5) / 127.5.
    "insightface": {"mean": (127.5, 127.5, 127.5), "std": (127.5, 127.5, 127.5), "channels": "RGB"},
    # FaceX-Zoo reads with OpenCV and keeps BGR, (x - 127.5) / 128.
    "facexzoo": {"mean": (127.5, 127.5, 127.5), "std": (128.0, 128.0, 128.0), "channels": "BGR"},
    # torchvision ImageNet: x/255 then mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225).
    "imagenet": {
        "mean": (123.675, 116.28, 103.53),
        "std": (58.395, 57.12, 57.375),
        "channels": "RGB",
    },
}

FITS = ("resize", "pad")


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes a model input tensor.

    Attributes:
        mean, std: per-channel, in 0-255 pixel units, in the order of ``channels``.
        channels: "RGB" or "BGR", the channel order the model takes.
        height, width: the model's input size in pixels.
        fit: what to do with an image of another size: "resize" (bilinear, aspect not kept)
            or "pad" (centre it on black, centre-cropping any side that is too long).
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channels: str
    height: int
    width: int
    fit: str = "resize"

    def __post_init__(self):
        if self.channels not in ("RGB", "BGR"):
            raise ValueError(f"channels must be RGB or BGR, not {self.channels!r}")
        if self.fit not in FITS:
            raise ValueError(f"fit must be one of {FITS}, not {self.fit!r}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("mean and std need 3 values, one per channel")
        if min(self.std) <= 0:
            raise ValueError("std values must be positive")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        return cls(
            mean=tuple(float(v) for v in d["mean"]),
            std=tuple(float(v) for v in d["std"]),
            channels=str(d["channels"]),
            height=int(d["height"]),
            width=int(d["width"]),
            fit=str(d.get("fit", "resize")),
        )


class ImageError(ValueError):
    """Image bytes that cannot be decoded; the message says what is wrong in a few words."""


_FORMAT_NAMES = {"MPO": "JPEG"}  # phone JPEGs with a second (depth/preview) image


def _describe(data: bytes) -> str:
    """The format the first bytes announce, for messages about undecodable files."""
    signatures = {
        b"\xff\xd8": "JPEG",
        b"\x89PNG": "PNG",
        b"GIF8": "GIF",
        b"BM": "BMP",
        b"RIFF": "WebP",
        b"II*\0": "TIFF",
        b"MM\0*": "TIFF",
    }
    for sig, name in signatures.items():
        if data.startswith(sig):
            return name
    return "image"


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB. 16-bit and 32-bit greyscale are scaled, not clipped (a
    plain ``convert`` maps every value above 255 to white)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if img.mode == "F":
            top = 1.0 if arr.size and arr.max() <= 1.0 else 255.0  # float images: 0-1 or 0-255
        else:
            top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        grey = np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(np.repeat(grey[..., None], 3, axis=2), "RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def decode_image(data: bytes) -> Image.Image:
    """Decode image bytes fully (so a truncated file fails here) into an upright RGB image.

    The EXIF orientation is applied (phone photos are stored sideways with a tag saying so);
    greyscale (8 or 16 bit), palette and alpha images become 3-channel RGB; of an animated
    GIF/WebP the first frame is used. Raises :class:`ImageError` with a short reason
    ("not an image", "truncated JPEG") on data that cannot be decoded.
    """
    fmt = _describe(data)
    try:
        with warnings.catch_warnings():
            # Between PIL's pixel limit and twice it PIL only warns, in its own words on
            # stderr; such a photo is decoded like any other (above 2x it is an error).
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise ImageError("image too large (more pixels than PIL's safety limit)") from None
    except (OSError, ValueError, SyntaxError):  # UnidentifiedImageError is an OSError
        ends = {"JPEG": b"\xff\xd9", "PNG": b"IEND\xaeB`\x82"}
        if fmt in ends and not data.rstrip(b"\0").endswith(ends[fmt]):
            what = f"truncated {fmt}"
        else:
            what = "not an image" if fmt == "image" else f"corrupt {fmt} (header not readable)"
        raise ImageError(what) from None
    fmt = _FORMAT_NAMES.get(img.format, img.format or fmt)
    try:
        img.load()  # the first frame of an animated GIF/WebP: nothing seeks further
        # Only files that carry EXIF can be rotated by it; parsing it costs ~20 us/image.
        if "exif" in img.info or img.format == "TIFF":
            img = ImageOps.exif_transpose(img)
    except Exception as e:  # PIL raises many types for corrupt data
        text = str(e)
        if "truncated" in text or "broken data stream" in text or isinstance(e, EOFError):
            raise ImageError(f"truncated {fmt}") from None
        raise ImageError(f"corrupt {fmt} ({type(e).__name__}: {text[:80]})") from None
    return _to_rgb(img)


def fit_image(img: Image.Image, height: int, width: int, fit: str) -> Image.Image:
    """Bring ``img`` to ``width`` x ``height`` by resizing or by padding/centre-cropping."""
    if img.size == (width, height):
        return img
    if fit == "resize":
        return img.resize((width, height), Image.BILINEAR)
    w, h = img.size
    left, top = (w - width) // 2, (h - height) // 2
    # crop() with a box outside the image pads with zeros, which is the black border we want.
    return img.crop((left, top, left + width, top + height))


def load_pixels(data: bytes, spec: Preprocessing) -> tuple[np.ndarray, bool]:
    """Decode and fit one image: (uint8 HxWx3 RGB array, was_resized)."""
    img = decode_image(data)
    resized = img.size != (spec.width, spec.height)
    return np.asarray(fit_image(img, spec.height, spec.width, spec.fit)), resized


def normalise(pixels: np.ndarray, spec: Preprocessing) -> np.ndarray:
    """uint8 [N,H,W,3] RGB pixels -> float32 [N,3,H,W] model input in the model's order.

    A 256-entry lookup table per channel does the arithmetic once per value, not per pixel
    (about twice as fast as float maths here, and the decoder threads are the bottleneck
    for small models).
    """
    n, h, w, _ = pixels.shape
    out = np.empty((n, 3, h, w), np.float32)
    values = np.arange(256, dtype=np.float32)
    order = (2, 1, 0) if spec.channels == "BGR" else (0, 1, 2)
    for c, src in enumerate(order):
        lut = (values - np.float32(spec.mean[c])) / np.float32(spec.std[c])
        np.take(lut, pixels[..., src], out=out[:, c])
    return out


def load_tensor(data: bytes, spec: Preprocessing) -> tuple[np.ndarray, bool]:
    """Decode, fit and normalise one image. Returns (CHW float32 array, was_resized)."""
    pixels, resized = load_pixels(data, spec)
    return normalise(pixels[None], spec)[0], resized
