"""`faceclean align`: landmark decoding, the similarity fit, the warp, and real faces."""

from __future__ import annotations

import io

import numpy as np
import pytest
from click.testing import CliRunner
from onnx import helper
from PIL import Image

from faceclean.cli import main
from faceclean.data.align import (
    ARCFACE_TEMPLATE,
    affine_warp,
    align,
    apply_transform,
    refine_landmarks,
    similarity_transform,
    warp,
)
from faceclean.data.datasets import read_rec
from faceclean.data.detectors import FaceDetector, decode_scrfd, decode_yunet, nms
from faceclean.errors import FacecleanError
from tests.conftest import SHARED, SHARED_MODEL, SHARED_ORL, make_onnx, tensor

YUNET = SHARED / "models" / "face_detection_yunet_2026may.onnx"
needs_yunet = pytest.mark.skipif(
    not (YUNET.is_file() and SHARED_ORL.is_dir()), reason=f"YuNet and ORL are not at {SHARED}"
)


def rotation(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])


def test_similarity_transform_recovers_a_known_one_and_never_reflects():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    m = np.hstack([1.7 * rotation(23), [[12.0], [-5.0]]])
    np.testing.assert_allclose(similarity_transform(src, apply_transform(m, src)), m, atol=1e-9)
    mirrored = src * [-1, 1]  # the best fit would be a reflection; we want a rotation
    fit = similarity_transform(src, mirrored)
    assert np.linalg.det(fit[:, :2]) > 0


def test_warp_moves_landmarks_onto_the_template():
    # A grey image with a bright dot on each landmark of a face rotated 30 deg, scaled 2x.
    m = np.hstack([2.0 * rotation(30), [[60.0], [20.0]]])
    landmarks = apply_transform(m, ARCFACE_TEMPLATE)
    img = np.zeros((300, 300), np.uint8)
    for x, y in np.round(landmarks).astype(int):
        img[y - 2 : y + 3, x - 2 : x + 3] = 255
    crop, residual = warp(Image.fromarray(img), landmarks)
    assert crop.size == (112, 112) and residual < 1e-6
    out = np.asarray(crop, np.float32)
    for x, y in ARCFACE_TEMPLATE:
        x, y = int(round(x)), int(round(y))
        assert out[y, x] > 200  # the dot landed on the template point
    assert out.mean() < 30  # and nowhere much else


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    assert nms(boxes, np.array([0.5, 0.9, 0.7]), 0.4).tolist() == [1, 2]


def test_yunet_and_scrfd_decoding_of_hand_made_outputs():
    # One hit on the stride-8 grid at row 2, col 3 of a 32x64 input (4 rows, 8 cols).
    outs = {}
    for s in (8, 16, 32):
        a = (32 // s) * (64 // s)
        outs |= {f"cls_{s}": np.zeros((1, a, 1)), f"obj_{s}": np.zeros((1, a, 1))}
        outs |= {f"bbox_{s}": np.zeros((1, a, 4)), f"kps_{s}": np.zeros((1, a, 10))}
    i = 2 * 8 + 3
    outs["cls_8"][0, i], outs["obj_8"][0, i] = 0.81, 1.0
    outs["bbox_8"][0, i] = [0.5, 0.5, np.log(2), np.log(3)]
    outs["kps_8"][0, i, :2] = [0.25, -0.25]
    boxes, scores, kps = decode_yunet(outs, 32, 64, 0.5)
    np.testing.assert_allclose(scores, [0.9])
    np.testing.assert_allclose(boxes, [[28 - 8, 20 - 12, 28 + 8, 20 + 12]])
    np.testing.assert_allclose(kps[0, 0], [26, 14])
    # SCRFD: 2 anchors per cell; anchor 1 of cell (row 1, col 2) at stride 16.
    names = {r: [f"{r}_{s}" for s in (8, 16, 32)] for r in ("score", "bbox", "kps")}
    so = {}
    for s in (8, 16, 32):
        a = 2 * (32 // s) * (64 // s)
        so |= {f"score_{s}": np.zeros((a, 1)), f"bbox_{s}": np.zeros((a, 4))}
        so[f"kps_{s}"] = np.zeros((a, 10))
    j = 2 * (1 * 4 + 2) + 1
    so["score_16"][j] = 0.7
    so["bbox_16"][j] = [1, 0.5, 2, 1]
    so["kps_16"][j, 2:4] = [0.5, 1]
    boxes, scores, kps = decode_scrfd(so, names, 32, 64, 0.5)
    np.testing.assert_allclose(boxes, [[32 - 16, 16 - 8, 32 + 32, 16 + 16]])
    np.testing.assert_allclose(kps[0, 1], [40, 32])


def _fake_detector(path, outputs):
    nodes = [helper.make_node("Identity", ["x"], [name]) for name in outputs]
    return make_onnx(path, nodes, [tensor("x", [1, 3, 64, 64])], [tensor(n, None) for n in outputs])


def test_insightface_scrfd_export_is_read_from_its_output_order(tmp_path):
    names = [str(400 + k) for k in range(9)]
    nodes = [helper.make_node("Identity", ["x"], [n]) for n in names]
    shapes = [[None, d] for d in (1, 1, 1, 4, 4, 4, 10, 10, 10)]
    outs = [tensor(n, s) for n, s in zip(names, shapes, strict=True)]
    path = make_onnx(tmp_path / "det_10g.onnx", nodes, [tensor("x", [1, 3, 640, 640])], outs)
    det = FaceDetector(path)
    assert det.kind == "scrfd" and det.names["kps"] == names[6:] and det.fixed == (640, 640)


def test_detector_layouts_are_read_from_output_names(tmp_path):
    other = _fake_detector(tmp_path / "boxes.onnx", ["boxes", "scores"])
    with pytest.raises(FacecleanError, match="boxes.onnx.*not a face detector.*2 outputs"):
        FaceDetector(other)
    names = [f"{r}_{s}" for r in ("score", "bbox", "kps") for s in (8, 16, 32)]
    assert FaceDetector(_fake_detector(tmp_path / "scrfd.onnx", names)).kind == "scrfd"


def _scene(rng, crop: Image.Image, size=320):
    """(RGB scene with ``crop`` pasted at a random position, scale and rotation, the 2x3
    crop->scene transform, the pasted crop's axis-aligned box)."""
    scale, angle = rng.uniform(1.0, 2.0), rng.uniform(-25, 25)
    lin = scale * rotation(angle)
    w, h = crop.size
    corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], float) - [w / 2, h / 2]
    half = np.abs(corners @ lin.T).max(0)
    centre = rng.uniform(half + 2, size - half - 2)
    m = np.hstack([lin, (centre - lin @ [w / 2, h / 2])[:, None]])
    bg = rng.uniform(0, 255, (5, 5, 3)).astype(np.uint8)
    scene = Image.fromarray(bg).resize((size, size), Image.BICUBIC)
    face = affine_warp(crop.convert("RGB"), m, (size, size))
    mask = affine_warp(Image.new("L", crop.size, 255), m, (size, size))
    scene.paste(face, (0, 0), mask)
    box = np.concatenate([centre - half, centre + half]).round().astype(int)
    return scene, m, box


@needs_yunet
def test_real_faces_pasted_into_scenes_land_on_the_template(tmp_path):
    det = FaceDetector(YUNET, device="cpu")
    rng = np.random.default_rng(0)
    people = sorted(p for p in SHARED_ORL.iterdir() if p.is_dir())[:10]
    errors, shifts, raw_shifts = [], [], []
    raw, cut = tmp_path / "scenes", tmp_path / "unaligned"
    for person in people:
        for k, f in enumerate(sorted(person.glob("*.pgm"))):
            crop = Image.open(f)
            # Reference landmarks: the detector on the upright crop, on a plain canvas.
            canvas = Image.new("L", (160, 160), 0)
            canvas.paste(crop, (34, 24))
            ref = det.detect(canvas, 0.5)
            scene, m, box = _scene(rng, crop)
            (raw / person.name).mkdir(parents=True, exist_ok=True)
            (cut / person.name).mkdir(parents=True, exist_ok=True)
            scene.save(raw / person.name / f"{k}.png")
            scene.crop(tuple(box)).resize((112, 112)).save(cut / person.name / f"{k}.png")
            if not len(ref):
                continue
            truth = apply_transform(m, ref.landmarks[0] - [34, 24])  # in scene pixels
            found = det.detect(scene, 0.5)
            assert len(found) >= 1
            first = found.landmarks[0].astype(np.float64)
            ideal = apply_transform(similarity_transform(truth, ARCFACE_TEMPLATE), truth)
            # Where the true landmarks land after our warp, in template pixels: against the
            # template, and against where the best warp for the true landmarks puts them
            # (the part of the error that comes from detection, not from face shape); with
            # the landmarks as first found and as align uses them, refined.
            for lm, out in ((first, raw_shifts), (refine_landmarks(det, scene, first), shifts)):
                landed = apply_transform(similarity_transform(lm, ARCFACE_TEMPLATE), truth)
                out.append(np.linalg.norm(landed - ideal, axis=1))
            errors.append(np.linalg.norm(landed - ARCFACE_TEMPLATE, axis=1))
    errors, shifts, raw_shifts = np.array(errors), np.array(shifts), np.array(raw_shifts)
    print(
        f"landmark error after warping (template px): median {np.median(errors):.2f}, "
        f"p95 {np.percentile(errors, 95):.2f}; from detection: median {np.median(shifts):.2f}, "
        f"p95 {np.percentile(shifts, 95):.2f} (unrefined: median {np.median(raw_shifts):.2f}, "
        f"p95 {np.percentile(raw_shifts, 95):.2f})"
    )
    assert len(errors) >= 90
    # Inter-ocular distance on the template is 35 px: rotated, scaled faces are brought
    # back to within a few pixels of where the upright face's landmarks put them, and the
    # second look at the upright face helps.
    assert np.median(shifts) < 4.0 and np.percentile(shifts, 95) < 8.0
    assert np.median(shifts) < np.median(raw_shifts)
    assert np.median(errors) < 6.0

    out = tmp_path / "aligned"
    r = align(raw, out, det, workers=2)
    assert r.num_failed == 0 and r.num_faces == 100
    assert sorted(p.relative_to(out) for p in out.rglob("*.png")) == sorted(
        p.relative_to(raw) for p in raw.rglob("*.png")
    )
    if not SHARED_MODEL.is_file():
        return
    from faceclean.data.onnx_model import FaceModel

    model = FaceModel(SHARED_MODEL, device="cpu")
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])

    def nn_accuracy(folder):
        """Leave-one-out nearest-neighbour identification over every crop in ``folder``."""
        files = sorted(folder.rglob("*.png"))
        x = np.stack([np.asarray(Image.open(f).convert("RGB"), np.float32) / 255 for f in files])
        x = ((x - mean) / std).transpose(0, 3, 1, 2).astype(np.float32)
        e = model.run(x)
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        sim = e @ e.T
        np.fill_diagonal(sim, -np.inf)
        labels = np.array([f.parent.name for f in files])
        return float((labels[sim.argmax(1)] == labels).mean())

    aligned, unaligned = nn_accuracy(out), nn_accuracy(cut)
    print(f"nearest-neighbour identification: aligned {aligned:.3f}, unaligned {unaligned:.3f}")
    assert aligned >= unaligned


@needs_yunet
def test_align_layouts_picks_failures_and_resume(tmp_path):
    det = FaceDetector(YUNET, device="cpu")
    a = Image.open(SHARED_ORL / "s1" / "1.pgm")
    b = Image.open(SHARED_ORL / "s2" / "1.pgm").resize((46, 56))
    photo = Image.new("L", (320, 200), 90)
    photo.paste(a, (20, 40))
    photo.paste(b, (250, 60))
    raw = tmp_path / "raw"
    (raw / "x").mkdir(parents=True)
    photo.save(raw / "x" / "two.png")
    Image.new("L", (200, 200), 90).save(raw / "x" / "blank.png")
    (raw / "list.txt").write_text("x/two.png 7\nx/blank.png 7\n")

    r = align(raw / "list.txt", tmp_path / "all", det, pick="all", workers=1)
    assert r.num_faces == 2 and r.num_failed == 1
    assert "x/blank.png\t7\tno face found" in r.failures_path.read_text()
    assert r.list_path.read_text() == "x/two_1.png 7\nx/two_2.png 7\n"
    big = np.asarray(Image.open(tmp_path / "all" / "x" / "two_1.png"))
    assert big.shape == (112, 112)  # grey in, grey out

    r = align(raw / "list.txt", tmp_path / "small", det, min_size=40, pick="all", workers=1)
    assert r.num_faces == 1  # the 46x56 face's box is under 40 px on a side
    r = align(raw / "list.txt", tmp_path / "faces.rec", det, pick="all", workers=1)
    packed = read_rec(tmp_path / "faces.rec")
    assert len(packed) == 2 and packed.identities == ["7"] and r.output.suffix == ".rec"
    assert Image.open(io.BytesIO(packed.read(1))).size == (112, 112)
    assert not (tmp_path / "faces.rec.partial").exists()
    r = align(tmp_path / "faces.rec", tmp_path / "from_rec", det, workers=1)
    assert r.num_faces == 2
    assert sorted(p.name for p in (tmp_path / "from_rec" / "7").iterdir()) == ["1.png", "2.png"]
    r = align(raw / "list.txt", tmp_path / "c", det, pick="central", workers=1)
    again = align(raw / "list.txt", tmp_path / "c", det, pick="central", workers=1)
    # both photos have their record row (the blank one its reason), so neither is redone
    assert again.num_resumed == 2 and again.num_faces == 1 and again.num_failed == 1


def test_align_refuses_to_write_into_its_input(tmp_path, faces):
    model = _fake_detector(tmp_path / "boxes.onnx", ["boxes", "scores"])
    for out in (faces, faces / "aligned"):
        res = CliRunner().invoke(
            main, ["align", str(faces), "-o", str(out), "--detector", str(model)]
        )
        assert res.exit_code == 2 and "in the input folder" in res.output


def test_align_option_ranges_are_one_line_errors(tmp_path, faces):
    for bad in (["--min-score", "1.5"], ["--size", "0"], ["--workers", "0"], ["--max-side", "8"]):
        res = CliRunner().invoke(
            main, ["align", str(faces), "-o", str(tmp_path / "o"), "--detector", "x", *bad]
        )
        assert res.exit_code == 2 and bad[0] in res.output


def test_align_cli_refuses_an_unknown_detector(tmp_path, faces):
    model = _fake_detector(tmp_path / "boxes.onnx", ["boxes", "scores"])
    res = CliRunner().invoke(
        main, ["align", str(faces), "-o", str(tmp_path / "o"), "--detector", str(model)]
    )
    assert res.exit_code == 2 and "boxes.onnx" in res.output and "not a face detector" in res.output


def test_an_undecodable_photo_is_a_failure_with_a_reason_a_person_reads(tmp_path):
    from faceclean.data.align_photo import Options, align_photo

    res = align_photo(
        lambda: b"this is text, not a photo", "x/a.jpg", "x", "x/a.jpg", tmp_path, None, Options()
    )
    assert res.rows == [{"path": "x/a.jpg", "identity": "x", "reason": "not an image"}]
    assert res.residuals == [] and not (tmp_path / "x").exists()
