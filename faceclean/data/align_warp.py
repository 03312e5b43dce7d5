"""The geometry of `faceclean align`: the ArcFace template, the similarity fit, the warp.

A face is warped onto the ArcFace five-point template by the similarity transform
(rotation, uniform scale, translation) that maps its landmarks onto the template in the
least-squares sense (Umeyama 1991).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from faceclean.data.detectors import FaceDetector

# ArcFace / InsightFace 112x112 template (pixel-index coordinates, as cv2.warpAffine uses):
# image-left eye, image-right eye, nose tip, image-left mouth corner, image-right corner.
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    np.float64,
)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 similarity ``M`` minimising ``sum |M [src;1] - dst|^2`` (Umeyama 1991).

    src, dst: [n, 2] corresponding points (n >= 2). The rotation is kept proper (no
    reflection) even when the points would fit a mirror image better.
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    var_s = (xs**2).sum() / len(src)
    if var_s <= 1e-12:
        raise ValueError("the source points coincide")
    cov = xd.T @ xs / len(src)
    u, sing, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0
    rot = u @ np.diag(d) @ vt
    scale = float((sing * d).sum() / var_s)
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]])


def apply_transform(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points [..., 2] mapped by the 2x3 affine ``m``."""
    return points @ m[:, :2].T + m[:, 2]


def affine_warp(
    image: Image.Image, m: np.ndarray, size: tuple[int, int], resample=Image.BILINEAR
) -> Image.Image:
    """``image`` moved by the 2x3 affine ``m`` (pixel-index coordinates, source to
    destination, as cv2.warpAffine takes it) onto a (width, height) canvas, bilinear (or
    another PIL ``resample``)."""
    inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
    # PIL samples with pixel centres at +0.5; m works on pixel indices.
    c = inv[:, 2] + 0.5 - inv[:, :2] @ np.array([0.5, 0.5])
    data = (inv[0, 0], inv[0, 1], c[0], inv[1, 0], inv[1, 1], c[1])
    return image.transform(size, Image.AFFINE, data, resample=resample)


def warp(image: Image.Image, landmarks: np.ndarray, size: int = 112) -> tuple[Image.Image, float]:
    """(size x size crop with ``landmarks`` moved onto the ArcFace template, RMS residual in
    template pixels). The template is scaled by size/112."""
    template = ARCFACE_TEMPLATE * (size / 112.0)
    m = similarity_transform(landmarks, template)
    residual = float(np.sqrt(((apply_transform(m, landmarks) - template) ** 2).sum(1).mean()))
    return affine_warp(image, m, (size, size)), residual


def refine_landmarks(
    det: FaceDetector,
    image: Image.Image,
    landmarks: np.ndarray,
    margin: int = 56,
    mirror: bool = True,
) -> np.ndarray:
    """Landmarks found again on the face warped upright, mapped back to ``image``.

    The face is warped onto the template at the centre of a (112 + 2 margin)-pixel canvas
    and detected again; detectors place landmarks better on an upright face of the size
    they were trained on (measured on ORL faces rotated up to 25 degrees: the error after
    warping fell from a median 3.7 to 2.7 template pixels, p95 7.7 to 5.4). The original
    landmarks are kept when the second look finds no face. With ``mirror`` (default), the
    mirrored canvas is looked at too and the two sets of landmarks averaged (one more small
    detector call): the detector's errors on a face and on its mirror image partly cancel
    (celeb_dev_raw, 774 photos: 1-NN of the crops 0.9664 against 0.9625 without the mirror,
    benchmarks/bench_align_celeb.py).
    """
    size = 112 + 2 * margin
    m = similarity_transform(landmarks, ARCFACE_TEMPLATE + margin)
    canvas = affine_warp(image, m, (size, size))
    found = [_central_landmarks(det, canvas)]
    if mirror:
        flipped = _central_landmarks(det, canvas.transpose(Image.FLIP_LEFT_RIGHT))
        if flipped is not None:  # back to the canvas; the face's left is the image's right
            found.append(np.stack([size - flipped[:, 0], flipped[:, 1]], 1)[[1, 0, 2, 4, 3]])
    found = [f for f in found if f is not None]
    if not found:
        return landmarks
    inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
    return apply_transform(inv, np.mean(found, axis=0))


def _central_landmarks(det: FaceDetector, canvas: Image.Image) -> np.ndarray | None:
    """Landmarks [5, 2] of the face nearest the centre of ``canvas``, or None."""
    faces = det.detect(canvas, 0.3)
    if not len(faces):
        return None
    centre = (faces.boxes[:, :2] + faces.boxes[:, 2:]) / 2 - np.array(canvas.size) / 2
    return faces.landmarks[int(np.argmin((centre**2).sum(1)))].astype(np.float64)
