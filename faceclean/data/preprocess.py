"""Image decoding and the explicit preprocessing a face model expects.

Nothing here is guessed: the channel order, mean, std (in 0-255 pixel units, per channel in
the model's channel order), input size and how a wrongly sized image is fitted are all
stated in a :class:`Preprocessing`, which is recorded in every embedding file.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

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


def decode_image(data: bytes) -> Image.Image:
    """Decode image bytes fully (so a truncated file fails here) into an RGB PIL image.

    Greyscale, palette and alpha images are converted to 3-channel RGB.
    Raises ``OSError``/``ValueError`` on corrupt or truncated data.
    """
    img = Image.open(io.BytesIO(data))
    img.load()
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img


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
