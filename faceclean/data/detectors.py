"""ONNX face detectors that give five landmarks: YuNet and SCRFD, recognised by their outputs.

The layout is read from the model's output names and shapes, never guessed from its file
name:

* **YuNet** (OpenCV Zoo): outputs ``cls_8/16/32``, ``obj_*``, ``bbox_*``, ``kps_*``, each
  ``[1, A, C]`` with one anchor point per cell of the stride's grid (``A = H/s * W/s``).
  Input: BGR float32 ``[1,3,H,W]``, raw 0-255 pixels, H and W multiples of 32. Score is
  ``sqrt(clip(cls) * clip(obj))``; the box centre is ``(cell + offset) * stride``, its size
  ``exp(offset) * stride``; a landmark is ``(cell + offset) * stride``.
* **SCRFD** (InsightFace): per stride a score ``[A, 1]`` (already a probability), a box
  ``[A, 4]`` as distances left/top/right/bottom and landmarks ``[A, 10]`` as offsets, both in
  units of the stride, from the cell's corner ``(col * s, row * s)``; usually 2 anchors per
  cell. Outputs named ``score_8 ... kps_32``, or nine unnamed outputs ordered scores,
  boxes, landmarks for strides 8, 16, 32 (InsightFace's export). Input: RGB,
  ``(x - 127.5) / 128``.

Landmarks come in the order of the ArcFace template: the eye on the image's left, the other
eye, the nose tip, the mouth corner on the image's left, the other mouth corner.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image

from faceclean.data.onnx_model import load_onnx, providers_for
from faceclean.errors import FacecleanError

STRIDES = (8, 16, 32)


@dataclass
class Faces:
    """Detections in one image, in the image's pixel coordinates (x right, y down).

    Attributes:
        boxes: float32 [n, 4] as x1, y1, x2, y2.
        scores: float32 [n], in 0..1.
        landmarks: float32 [n, 5, 2], ArcFace order (see the module docstring).
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    def take(self, idx) -> Faces:
        return Faces(self.boxes[idx], self.scores[idx], self.landmarks[idx])


def _empty() -> Faces:
    return Faces(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2)))


def _last_dim(value) -> int | None:
    dims = value.type.tensor_type.shape.dim
    return dims[-1].dim_value if len(dims) and dims[-1].HasField("dim_value") else None


def read_layout(model: onnx.ModelProto, path: Path) -> tuple[str, dict[str, list[str]]]:
    """("yunet" | "scrfd", {role: [output name for stride 8, 16, 32]}) or FacecleanError."""
    names = [o.name for o in model.graph.output]
    have = set(names)
    yunet = {r: [f"{r}_{s}" for s in STRIDES] for r in ("cls", "obj", "bbox", "kps")}
    if all(n in have for group in yunet.values() for n in group):
        return "yunet", yunet
    scrfd = {r: [f"{r}_{s}" for s in STRIDES] for r in ("score", "bbox", "kps")}
    if all(n in have for group in scrfd.values() for n in group):
        return "scrfd", scrfd
    # InsightFace's own SCRFD exports name outputs by node number; their order and last
    # dimensions (1, 1, 1, 4, 4, 4, 10, 10, 10) identify them.
    last = [_last_dim(o) for o in model.graph.output]
    if len(names) == 9 and last == [1, 1, 1, 4, 4, 4, 10, 10, 10]:
        return "scrfd", {"score": names[0:3], "bbox": names[3:6], "kps": names[6:9]}
    shown = ", ".join(
        f"{n}{[d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim]}"
        for n, o in zip(names, model.graph.output, strict=True)
    )
    raise FacecleanError(
        "not a face detector faceclean can decode: it needs YuNet outputs "
        "(cls/obj/bbox/kps_8/16/32) or SCRFD outputs with landmarks (score/bbox/kps per "
        f"stride 8, 16, 32); this model has {len(names)} outputs: {shown[:300]}",
        path,
    )


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy non-maximum suppression: indices kept, best score first."""
    order = np.argsort(-scores, kind="stable")
    area = np.maximum(0, boxes[:, 2] - boxes[:, 0]) * np.maximum(0, boxes[:, 3] - boxes[:, 1])
    keep = []
    while len(order):
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0])
        h = np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1])
        inter = np.maximum(0, w) * np.maximum(0, h)
        overlap = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
        order = rest[overlap <= iou]
    return np.asarray(keep, np.int64)


def decode_yunet(outs: dict[str, np.ndarray], height: int, width: int, min_score: float):
    """YuNet outputs of one [1,3,height,width] input -> (boxes, scores, landmarks)."""
    boxes, scores, kps = [], [], []
    for s in STRIDES:
        rows, cols = height // s, width // s
        cls = outs[f"cls_{s}"].reshape(-1)
        obj = outs[f"obj_{s}"].reshape(-1)
        if cls.size != rows * cols:
            raise ValueError(f"stride {s}: {cls.size} anchors for a {rows}x{cols} grid")
        score = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
        hit = np.nonzero(score >= min_score)[0]
        cell = np.stack([hit % cols, hit // cols], axis=1).astype(np.float32)
        b = outs[f"bbox_{s}"].reshape(-1, 4)[hit]
        centre = (cell + b[:, :2]) * s
        size = np.exp(b[:, 2:]) * s
        boxes.append(np.concatenate([centre - size / 2, centre + size / 2], axis=1))
        kps.append((outs[f"kps_{s}"].reshape(-1, 5, 2)[hit] + cell[:, None, :]) * s)
        scores.append(score[hit])
    return np.concatenate(boxes), np.concatenate(scores), np.concatenate(kps)


def decode_scrfd(outs: dict[str, np.ndarray], names, height: int, width: int, min_score: float):
    """SCRFD outputs of one [1,3,height,width] input -> (boxes, scores, landmarks)."""
    boxes, scores, kps = [], [], []
    for i, s in enumerate(STRIDES):
        rows, cols = height // s, width // s
        score = outs[names["score"][i]].reshape(-1)
        per_cell = score.size // (rows * cols)
        if per_cell * rows * cols != score.size:
            raise ValueError(f"stride {s}: {score.size} anchors for a {rows}x{cols} grid")
        hit = np.nonzero(score >= min_score)[0]
        cell = hit // per_cell
        anchor = np.stack([cell % cols, cell // cols], axis=1).astype(np.float32) * s
        d = outs[names["bbox"][i]].reshape(-1, 4)[hit] * s
        boxes.append(np.concatenate([anchor - d[:, :2], anchor + d[:, 2:]], axis=1))
        kps.append(anchor[:, None, :] + outs[names["kps"][i]].reshape(-1, 5, 2)[hit] * s)
        scores.append(score[hit])
    return np.concatenate(boxes), np.concatenate(scores), np.concatenate(kps)


class FaceDetector:
    """An ONNX five-landmark face detector (YuNet or SCRFD).

    Args:
        path: the .onnx file.
        device: "auto", "cpu" or "cuda".
        max_side: images are shrunk (never enlarged) so their longer side is at most this
            many pixels before detection; models with a fixed input size use that instead.
        threads: onnxruntime intra-op threads (None: its default).
        nms_iou: overlap above which the weaker of two boxes is dropped.
    """

    def __init__(
        self,
        path: str | Path,
        device: str = "auto",
        max_side: int = 640,
        threads: int | None = None,
        nms_iou: float = 0.4,
    ):
        self.path = Path(path)
        model = load_onnx(self.path, "detector model")
        self.kind, self.names = read_layout(model, self.path)
        initializers = {i.name for i in model.graph.initializer}
        inputs = [i for i in model.graph.input if i.name not in initializers]
        dims = (
            [
                d.dim_value if d.HasField("dim_value") else None
                for d in inputs[0].type.tensor_type.shape.dim
            ]
            if len(inputs) == 1
            else []
        )
        if len(dims) != 4 or dims[1] not in (3, None):
            raise FacecleanError("a face detector needs one image input [1,3,H,W]", self.path)
        self.input_name = inputs[0].name
        self.fixed = (dims[2], dims[3]) if dims[2] and dims[3] else None
        self.max_side, self.nms_iou = max_side, nms_iou
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.providers = providers_for(device)
        try:
            self._sess = ort.InferenceSession(
                model.SerializeToString(), opts, providers=self.providers
            )
        except Exception as e:
            msg = str(e).splitlines()[0][:200]
            raise FacecleanError(f"onnxruntime cannot load the model: {msg}", self.path) from None
        self._outputs = [o.name for o in self._sess.get_outputs()]

    def _input(self, image: Image.Image) -> tuple[np.ndarray, float, int, int]:
        """(tensor [1,3,H,W], scale from image to tensor pixels, H, W)."""
        w, h = image.size
        if self.fixed:
            th, tw = self.fixed
            scale = min(th / h, tw / w)  # letterbox: fit inside, pad right and bottom
        else:
            scale = min(1.0, self.max_side / max(w, h))
            th = tw = None
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        rgb = image.convert("RGB")
        if (nw, nh) != (w, h):
            rgb = rgb.resize((nw, nh), Image.BILINEAR)
        if th is None:
            th, tw = -(-nh // 32) * 32, -(-nw // 32) * 32
        canvas = np.zeros((th, tw, 3), np.float32)
        canvas[:nh, :nw] = np.asarray(rgb, np.float32)
        if self.kind == "yunet":
            canvas = canvas[..., ::-1]  # BGR, raw pixels
        else:
            canvas = (canvas - 127.5) / 128.0
        x = np.ascontiguousarray(canvas.transpose(2, 0, 1)[None])
        return x, nw / w, th, tw

    def detect(self, image: Image.Image, min_score: float = 0.5) -> Faces:
        """Faces in a PIL image (any mode), best score first, after NMS."""
        x, scale, th, tw = self._input(image)
        outs = dict(zip(self._outputs, self._sess.run(None, {self.input_name: x}), strict=True))
        try:
            if self.kind == "yunet":
                boxes, scores, kps = decode_yunet(outs, th, tw, min_score)
            else:
                boxes, scores, kps = decode_scrfd(outs, self.names, th, tw, min_score)
        except ValueError as e:
            raise FacecleanError(
                f"{self.kind} outputs do not fit the input size: {e}", self.path
            ) from None
        if not len(scores):
            return _empty()
        keep = nms(boxes, scores, self.nms_iou)
        return Faces(
            (boxes[keep] / scale).astype(np.float32),
            scores[keep].astype(np.float32),
            (kps[keep] / scale).astype(np.float32),
        )
