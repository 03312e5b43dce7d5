"""Which detections `faceclean align` may keep: plausibility checks and rotated retries.

A five-landmark detector also fires on hands, cloth, skin and the like, and it misses
people lying on their side. :func:`find_faces` keeps only detections whose score reaches
the floor and whose landmarks have the geometry of a face (:func:`implausible`), and when
a photo has none it looks again with the photo turned by 90, 180 and 270 degrees, mapping
what it finds back into the photo's own pixels (so the warp turns the face upright).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from faceclean.data.detectors import FaceDetector, Faces

ROTATIONS = (90, 180, 270)  # degrees counter-clockwise
# A best face scoring at least this, with its eye line within 45 degrees of level, is taken
# as upright: no turn is tried. Upright faces of celeb_dev_raw scored 0.86-0.96 (best face
# of 260 photos); sideways faces that YuNet marked as upright scored ~0.8.
CONFIDENT = 0.85
_TRANSPOSE = {90: Image.ROTATE_90, 180: Image.ROTATE_180, 270: Image.ROTATE_270}

# Landmark geometry in the face's own frame: origin at the midpoint of the eyes, y along
# the line to the midpoint of the mouth corners (down the face), x perpendicular to it (to
# the image's right for an upright face), both in units of that eyes-to-mouth distance,
# which, unlike the distance between the eyes, does not collapse on a face in profile. The
# ArcFace template has the nose at y = 0.49, the eyes 0.87 apart, the mouth 0.72 wide. On
# the 776 best YuNet faces (score >= 0.6) of the 779 celeb_dev_raw photos the ranges seen
# were (0.5th-99.5th percentile, then min-max): nose y 0.46-0.69 (0.36-0.73), nose x
# -0.36-0.36 (-0.45-0.43), eye distance 0.48-1.20 (0.09-1.25), mouth width 0.39-1.13
# (0.14-1.21), eyes-to-mouth distance / longer box side 0.30-0.41 (0.29-0.41). The ranges
# below hold every one of them; they reject landmark sets that are mirrored, collapsed,
# stretched or out of proportion with their box. (YuNet's landmarks on its false
# detections are face-shaped too: the score floor and the pick's score margin do most of
# the rejecting there.)
NOSE_Y = (0.25, 0.9)
NOSE_X = 0.8  # |nose x| at most
EYES_APART = (-0.05, 1.8)  # x of the image-right eye minus x of the other
MOUTH_WIDTH = (-0.05, 1.6)  # likewise for the mouth corners
FACE_IN_BOX = (0.15, 0.7)  # eyes-to-mouth distance / longer box side


def face_frame(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """(landmarks [5, 2] in the face's frame (see above), eyes-to-mouth distance in
    pixels; NaNs when that distance is 0)."""
    lm = np.asarray(landmarks, np.float64)
    eyes = (lm[0] + lm[1]) / 2
    down = (lm[3] + lm[4]) / 2 - eyes
    h = float(np.hypot(*down))
    if h < 1e-6:
        return np.full((5, 2), np.nan), h
    y = down / h
    x = np.array([y[1], -y[0]])  # y turned -90 degrees in image coordinates (y down)
    rel = lm - eyes
    return np.stack([rel @ x, rel @ y], axis=1) / h, h


def roll_degrees(landmarks: np.ndarray) -> float:
    """In-plane angle of the face in the image, degrees, from the line between the eyes'
    and the mouth corners' midpoints (0: upright, positive: turned clockwise in the
    picture, +-180: upside down)."""
    lm = np.asarray(landmarks, np.float64)
    down = (lm[3] + lm[4]) / 2 - (lm[0] + lm[1]) / 2
    return float(np.degrees(np.arctan2(-down[0], down[1])))


def implausible(box: np.ndarray, score: float, landmarks: np.ndarray, min_score: float):
    """Why a detection is not a face to keep, in a few words, or None when it passes.

    Args:
        box: x1, y1, x2, y2 in pixels. score: the detector's score, 0..1.
        landmarks: [5, 2] pixels, ArcFace order (eyes, nose, mouth corners).
        min_score: the score floor.
    """
    if score < min_score:
        return _under(score, min_score)
    f, h = face_frame(landmarks)
    side = float(max(box[2] - box[0], box[3] - box[1]))
    if not np.isfinite(f).all() or side <= 0:
        return "landmarks collapsed"
    checks = (
        (f[2, 1], NOSE_Y, "nose not between the eyes and the mouth"),
        (f[2, 0], (-NOSE_X, NOSE_X), "nose beside the face"),
        (f[1, 0] - f[0, 0], EYES_APART, "eyes mirrored or too far apart"),
        (f[4, 0] - f[3, 0], MOUTH_WIDTH, "mouth corners mirrored or too far apart"),
        (h / side, FACE_IN_BOX, "landmarks out of proportion with the box"),
    )
    for value, (lo, hi), reason in checks:
        if not lo <= value <= hi:
            return f"{reason} ({value:.2f})"
    return None


def _under(score: float, min_score: float) -> str | None:
    return f"score {score:.2f} under {min_score:g}" if score < min_score else None


def _rotation_matrix(degrees: int, w: int, h: int) -> np.ndarray:
    """2x3 map from a point of the photo turned ``degrees`` counter-clockwise (PIL's
    ``transpose``) back to the unturned ``w`` x ``h`` photo, continuous pixel coords."""
    if degrees == 90:  # turned (x', y') = (y, w - x)
        return np.array([[0.0, -1.0, w], [1.0, 0.0, 0.0]])
    if degrees == 180:
        return np.array([[-1.0, 0.0, w], [0.0, -1.0, h]])
    if degrees == 270:  # turned (x', y') = (h - y, x)
        return np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, h]])
    return np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def unrotate(faces: Faces, degrees: int, size: tuple[int, int]) -> Faces:
    """Detections made on the photo turned ``degrees`` (counter-clockwise), in the pixels of
    the unturned photo of ``size`` (w, h). Landmark order (the face's own) is unchanged."""
    if degrees == 0 or not len(faces):
        return faces
    m = _rotation_matrix(degrees, *size)
    lm = faces.landmarks.astype(np.float64) @ m[:, :2].T + m[:, 2]
    b = faces.boxes.astype(np.float64)
    corners = np.stack([b[:, [0, 1]], b[:, [2, 1]], b[:, [0, 3]], b[:, [2, 3]]], axis=1)
    corners = corners @ m[:, :2].T + m[:, 2]
    boxes = np.concatenate([corners.min(1), corners.max(1)], axis=1)
    return Faces(boxes.astype(np.float32), faces.scores, lm.astype(np.float32))


@dataclass
class Found:
    """The outcome of looking for faces in one photo.

    Attributes:
        faces: the detections that passed the checks, in the photo's pixels, best score
            first (empty when none did).
        num_found: detections with a score at the floor or above (and a box of min_size
            or more) at the rotation used (at 0 degrees when nothing passed at any).
        rotation: degrees the photo was turned counter-clockwise for detection (0, 90, 180,
            270). reason: why nothing was kept, or None.
    """

    faces: Faces
    num_found: int
    rotation: int
    reason: str | None


def _upright(score: float, landmarks: np.ndarray) -> bool:
    return score >= CONFIDENT and abs(roll_degrees(landmarks)) <= 45


def _detect(det, image, detect_score, min_size):
    faces = det.detect(image, detect_score)
    wh = faces.boxes[:, 2:] - faces.boxes[:, :2]
    return faces.take(np.nonzero(wh.min(1) >= min_size)[0]) if len(faces) else faces


def find_faces(
    det: FaceDetector,
    image: Image.Image,
    min_score: float,
    min_size: float = 0.0,
    *,
    check: bool = True,
    rotate: bool = True,
    detect_score: float | None = None,
) -> Found:
    """Detect, keep the plausible faces and, when none or unsure, retry the photo turned.

    Args:
        det: the detector. image: the photo (any PIL mode).
        min_score: the score floor of a kept face. min_size: smallest box side, pixels.
        check: apply :func:`implausible` (else every detection above the floor passes).
        rotate: when nothing passes, or the best face that does looks turned (score under
            :data:`CONFIDENT`, or eye line tilted more than 45 degrees: YuNet marks a face
            lying on its side with the landmarks of an upright one and a lower score), try
            every turn in :data:`ROTATIONS` too and keep the turn whose best face scores
            highest.
        detect_score: the detector's own threshold: detections between it and the floor
            are never kept, but one can be the reason given [default: the lower of 0.5 and
            min_score].
    """
    detect_score = min(0.5 if detect_score is None else detect_score, min_score)
    first_reason, first_count, best = None, 0, None
    for degrees in (0, *(ROTATIONS if rotate else ())):
        turned = image if degrees == 0 else image.transpose(_TRANSPOSE[degrees])
        faces = _detect(det, turned, detect_score, min_size)
        reasons = [
            implausible(b, float(s), lm, min_score) if check else _under(float(s), min_score)
            for b, s, lm in zip(faces.boxes, faces.scores, faces.landmarks, strict=True)
        ]
        ok = [k for k, r in enumerate(reasons) if r is None]
        count = int((faces.scores >= min_score).sum())
        if ok:  # detections come best score first, so ok[0] is the best that passed
            found = Found(unrotate(faces.take(ok), degrees, image.size), count, degrees, None)
            if best is None or faces.scores[ok[0]] > best[0]:
                best = (float(faces.scores[ok[0]]), found)
            if degrees == 0 and _upright(faces.scores[ok[0]], faces.landmarks[ok[0]]):
                break
        if degrees == 0:
            first_count = count
            # The best-scoring rejected detection says why the photo gave nothing.
            first_reason = f"no plausible face: {reasons[0]}" if reasons else "no face found"
    if best is not None:
        return best[1]
    return Found(faces.take([]), first_count, 0, first_reason)
