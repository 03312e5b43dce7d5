"""`faceclean align`: plausibility checks, rotated retries, the per-photo record, resume."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from faceclean.cli import main
from faceclean.data import align_photo as align_photo_module
from faceclean.data.align import ARCFACE_TEMPLATE, align, warp
from faceclean.data.align_checks import find_faces, implausible, unrotate
from faceclean.data.detectors import FaceDetector, Faces
from faceclean.errors import FacecleanError
from tests.conftest import SHARED, SHARED_MODEL, SHARED_ORL

YUNET = SHARED / "models" / "face_detection_yunet_2026may.onnx"
needs_yunet = pytest.mark.skipif(
    not (YUNET.is_file() and SHARED_ORL.is_dir()), reason=f"YuNet and ORL are not at {SHARED}"
)
BOX = np.array([20.0, 20.0, 100.0, 120.0])


def test_template_landmarks_pass_and_broken_geometries_say_why():
    lm = ARCFACE_TEMPLATE * 1.5 + 10
    assert implausible(BOX * 1.5, 0.9, lm, 0.6) is None
    profile = lm.copy()
    profile[1, 0] = profile[0, 0] + 4  # eyes almost on each other: a face in profile
    profile[4, 0] = profile[3, 0] + 6
    assert implausible(BOX * 1.5, 0.9, profile, 0.6) is None
    assert implausible(BOX, 0.5, lm, 0.6) == "score 0.50 under 0.6"
    mirrored = lm.copy()
    mirrored[:, 1] = 200 - mirrored[:, 1]  # flipped top to bottom: a reflection
    assert implausible(BOX * 1.5, 0.9, mirrored, 0.6).startswith("eyes mirrored")
    squashed = lm.copy()
    squashed[3:, 1] = squashed[2, 1] + 1  # mouth on the nose's line
    assert implausible(BOX * 1.5, 0.9, squashed, 0.6).startswith("nose not between")
    stretched = lm.copy()
    stretched[3:, 1] += 150  # mouth far below: a chin-to-belly "face"
    assert implausible(BOX * 1.5, 0.9, stretched, 0.6).startswith("nose not between")
    swapped = lm.copy()
    swapped[[3, 4]] = swapped[[4, 3]]  # mouth corners the wrong way round
    assert implausible(BOX * 1.5, 0.9, swapped, 0.6).startswith("mouth corners mirrored")
    aside = lm.copy()
    aside[2, 0] += 60
    assert implausible(BOX * 1.5, 0.9, aside, 0.6).startswith("nose beside the face")
    assert implausible(BOX * 10, 0.9, lm, 0.6).startswith("landmarks out of proportion")
    assert implausible(BOX, 0.9, np.zeros((5, 2)), 0.6) == "landmarks collapsed"


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_unrotate_maps_points_of_a_turned_photo_back(degrees):
    w, h = 64, 48
    img = np.zeros((h, w), np.uint8)
    img[10, 50] = 255  # a dot at pixel (x 50, y 10): its centre is (50.5, 10.5)
    turned = np.asarray(
        Image.fromarray(img).transpose(
            {90: Image.ROTATE_90, 180: Image.ROTATE_180, 270: Image.ROTATE_270}[degrees]
        )
    )
    y, x = np.argwhere(turned == 255)[0]
    faces = Faces(
        np.array([[x, y, x + 1, y + 1]], np.float32),
        np.ones(1, np.float32),
        np.tile([[x + 0.5, y + 0.5]], (1, 5, 1)).astype(np.float32),
    )
    back = unrotate(faces, degrees, (w, h))
    np.testing.assert_allclose(back.landmarks[0, 0], [50.5, 10.5], atol=1e-5)
    np.testing.assert_allclose(back.boxes[0], [50, 10, 51, 11], atol=1e-5)


def _face_photo(name="s1/1.pgm", size=(240, 220), at=(70, 50)) -> Image.Image:
    photo = Image.new("L", size, 90)
    photo.paste(Image.open(SHARED_ORL / name), at)
    return photo


@needs_yunet
def test_a_face_lying_on_its_side_is_found_by_turning_and_warped_upright():
    det = FaceDetector(YUNET, device="cpu")
    upright = _face_photo()
    ref = find_faces(det, upright, 0.6)
    assert ref.rotation == 0 and len(ref.faces) == 1
    want = np.asarray(warp(upright, ref.faces.landmarks[0])[0], np.float32)
    for degrees, turn in ((90, Image.ROTATE_90), (270, Image.ROTATE_270)):
        sideways = upright.transpose(turn)
        found = find_faces(det, sideways, 0.6)
        assert len(found.faces) == 1
        crop = np.asarray(warp(sideways, found.faces.landmarks[0])[0], np.float32)
        # The crop is the upright face (not turned): close to the upright photo's crop.
        assert np.abs(crop - want).mean() < 12, (degrees, found.rotation)
        assert np.abs(np.rot90(crop) - want).mean() > 2 * np.abs(crop - want).mean()
        no_turn = find_faces(det, sideways, 0.6, rotate=False)
        if found.rotation:  # the turn was needed: without it nothing is kept
            assert len(no_turn.faces) == 0 and no_turn.reason


def _raw_folder(tmp_path):
    raw = tmp_path / "raw"
    for person, names in (("s1", ["1", "2"]), ("s2", ["1"])):
        (raw / person).mkdir(parents=True)
        for n in names:
            _face_photo(f"{person}/{n}.pgm").save(raw / person / f"{n}.png")
    Image.new("L", (200, 200), 90).save(raw / "s2" / "blank.png")
    (raw / "s2" / "broken.png").write_bytes(b"not a png")
    return raw


@needs_yunet
def test_the_record_says_what_happened_to_each_photo(tmp_path):
    raw = _raw_folder(tmp_path)
    r = align(raw, tmp_path / "out", YUNET, workers=1, device="cpu")
    assert r.records_path == tmp_path / "out.align.parquet" and r.num_faces == 3
    rec = pq.read_table(r.records_path).to_pylist()
    assert [x["path"] for x in rec] == [
        "s1/1.png",
        "s1/2.png",
        "s2/1.png",
        "s2/blank.png",
        "s2/broken.png",
    ]
    for row in rec[:3]:
        assert row["crop"] == row["path"] and row["reason"] is None
        assert row["faces_found"] >= 1 and row["rotation"] == 0 and row["score"] >= 0.6
        x1, y1, x2, y2 = row["box"]
        assert 40 < x1 < x2 < 200 and 20 < y1 < y2 < 200  # around the pasted 92x112 face
        lm = np.array(row["landmarks"]).reshape(5, 2)
        assert (lm[:2, 1] < lm[2, 1]).all() and (lm[2, 1] < lm[3:, 1]).all()
        assert abs(row["roll"]) < 15 and 0 <= row["residual"] < 10
    assert rec[3]["crop"] is None and rec[3]["faces_found"] == 0
    assert rec[3]["reason"] == "no face found"
    assert rec[4]["reason"] == "not an image" and rec[4]["faces_found"] is None
    tsv = (tmp_path / "out.failures.tsv").read_text()
    assert "s2/blank.png\ts2\tno face found" in tsv and "s2/broken.png" in tsv


@needs_yunet
def test_a_killed_run_resumes_and_its_record_stays_complete(tmp_path, monkeypatch):
    raw = _raw_folder(tmp_path)
    real_save, calls = align_photo_module.save, []

    def dying_save(image, path):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed while writing the third crop
        real_save(image, path)

    monkeypatch.setattr(align_photo_module, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        align(raw, tmp_path / "out", YUNET, workers=1, device="cpu")
    monkeypatch.setattr(align_photo_module, "save", real_save)
    assert not (tmp_path / "out.align.parquet").exists()
    assert list((tmp_path / "out.align.parquet.partial").glob("part-*.parquet"))
    # A crop written by the dead run without its record row is done again.
    r = align(raw, tmp_path / "out", YUNET, workers=1, device="cpu")
    assert r.num_resumed == 2 and r.num_faces == 3 and r.num_failed == 2
    rows = pq.read_table(r.records_path).to_pylist()
    assert len(rows) == 5 and sum(x["crop"] is not None for x in rows) == 3
    assert not (tmp_path / "out.align.parquet.partial").exists()
    again = align(raw, tmp_path / "out", YUNET, workers=1, device="cpu")
    assert again.num_resumed == 5 and pq.read_table(again.records_path).to_pylist() == rows
    # Other settings: nothing is reused, and crops the record no longer names are removed.
    # Nothing aligned at all is an error (issue 22), the record still says why for each.
    with pytest.raises(FacecleanError, match="no face aligned in any of the 5 photos"):
        align(raw, tmp_path / "out", YUNET, workers=1, device="cpu", min_score=0.999)
    assert not list((tmp_path / "out").rglob("*.png"))
    rows = pq.read_table(tmp_path / "out.align.parquet").to_pylist()
    assert all(x["reason"] for x in rows)
    assert rows[0]["reason"].startswith("no plausible face: score")


def _align_by_identity(raw, out):
    kw = {"embedder": SHARED_MODEL, "preset": "imagenet", "workers": 1, "device": "cpu"}
    return align(raw, out, YUNET, pick="identity", **kw)


@needs_yunet
@pytest.mark.skipif(not SHARED_MODEL.is_file(), reason=f"no face model at {SHARED_MODEL}")
def test_pick_identity_keeps_the_face_of_the_photos_label_not_the_largest(tmp_path):
    raw = tmp_path / "raw"
    (raw / "s1").mkdir(parents=True)
    for n in range(1, 5):
        _face_photo(f"s1/{n}.pgm").save(raw / "s1" / f"{n}.png")
    group = Image.new("L", (420, 260), 90)
    group.paste(Image.open(SHARED_ORL / "s1" / "5.pgm"), (30, 60))  # the labelled person
    group.paste(Image.open(SHARED_ORL / "s2" / "1.pgm").resize((138, 168)), (250, 40))
    group.save(raw / "s1" / "group.png")
    largest = align(raw, tmp_path / "largest", YUNET, workers=1, device="cpu")
    by_id = _align_by_identity(raw, tmp_path / "identity")
    assert largest.num_faces == by_id.num_faces == 5 and by_id.num_chosen == 1
    row = {r["path"]: r for r in pq.read_table(largest.records_path).to_pylist()}["s1/group.png"]
    assert row["box"][0] > 200 and row["similarity"] is None  # the larger stranger
    row = {r["path"]: r for r in pq.read_table(by_id.records_path).to_pylist()}["s1/group.png"]
    assert row["box"][2] < 200 and row["similarity"] > 0.3  # s1, left
    assert row["faces_found"] == 2 and row["crop"] == "s1/group.png"
    single = pq.read_table(by_id.records_path).to_pylist()[0]
    assert single["crop"] == "s1/1.png" and single["similarity"] is None
    # Resumed: the other photos are done, so their crops on disk make the centroid.
    (tmp_path / "identity" / "s1" / "group.png").unlink()
    again = _align_by_identity(raw, tmp_path / "identity")
    assert again.num_resumed == 4 and again.num_chosen == 1
    rows = {r["path"]: r for r in pq.read_table(again.records_path).to_pylist()}
    assert rows["s1/group.png"]["box"][2] < 200
    assert rows["s1/group.png"]["similarity"] == pytest.approx(row["similarity"], abs=1e-3)


def test_pick_identity_without_a_face_model_is_a_one_line_error(tmp_path, faces):
    res = CliRunner().invoke(
        main,
        [
            "align",
            str(faces),
            "-o",
            str(tmp_path / "o"),
            "--detector",
            str(YUNET),
            "--pick",
            "identity",
        ],
    )
    assert res.exit_code == 2 and "--pick identity needs a face model" in res.output
    assert "Traceback" not in res.output


def _faces(scores, boxes, roll=0.0):
    """Faces with the given scores and boxes, template-shaped landmarks inside each box,
    turned by ``roll`` degrees about the box centre."""
    lms = []
    a = np.deg2rad(roll)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    for x1, y1, x2, y2 in boxes:
        s = (x2 - x1) / 112
        c = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
        lms.append(((ARCFACE_TEMPLATE - 56) * s) @ rot.T + c)
    return Faces(
        np.array(boxes, np.float32), np.array(scores, np.float32), np.array(lms, np.float32)
    )


def test_a_large_weak_detection_does_not_win_over_a_clear_face():
    from faceclean.data.align_photo import pick_faces

    faces = _faces([0.92, 0.68, 0.88], [[10, 10, 50, 50], [100, 0, 300, 200], [60, 60, 90, 90]])
    assert pick_faces(faces, (400, 300), "largest").scores.tolist() == pytest.approx([0.92])
    # "all" and "identity": every face, the eligible first, largest first
    ordered = pick_faces(faces, (400, 300), "all").scores.tolist()
    assert ordered == pytest.approx([0.92, 0.88, 0.68])
    central = pick_faces(faces, (400, 300), "central")
    assert central.scores.tolist() == pytest.approx([0.88])  # the drum is nearer the centre


class ScriptedDetector:
    """Answers the k-th detect call with the k-th scripted Faces (0, 90, 180, 270 deg)."""

    def __init__(self, answers):
        self.answers, self.calls = answers, 0

    def detect(self, image, min_score):
        self.calls += 1
        return self.answers[self.calls - 1]


def test_a_doubtful_face_makes_every_turn_be_tried_and_the_best_kept():
    image = Image.new("L", (400, 300))
    none = _faces([], np.zeros((0, 4)))
    # at 0 deg: a face at 0.80 (a face lying sideways, marked as upright); turned 90 deg
    # (the photo is then 300 wide, 400 high) a face at 0.95.
    det = ScriptedDetector(
        [
            _faces([0.8], [[100, 100, 200, 200]]),
            _faces([0.95], [[120, 150, 220, 250]]),
            none,
            _faces([0.7], [[10, 10, 90, 90]]),
        ]
    )
    found = find_faces(det, image, 0.6)
    assert det.calls == 4 and found.rotation == 90 and found.faces.scores[0] == pytest.approx(0.95)
    back = unrotate(_faces([0.95], [[120, 150, 220, 250]]), 90, (400, 300))
    np.testing.assert_allclose(found.faces.landmarks, back.landmarks)
    # a confident upright face: nothing else is tried
    det = ScriptedDetector([_faces([0.9], [[100, 100, 200, 200]])])
    assert find_faces(det, image, 0.6).rotation == 0 and det.calls == 1
    # a confident score but an eye line at 80 degrees: the turns are tried
    det = ScriptedDetector([_faces([0.9], [[100, 100, 200, 200]], roll=80), none, none, none])
    found = find_faces(det, image, 0.6)
    assert det.calls == 4 and found.rotation == 0 and len(found.faces) == 1
    # --no-rotate: one look
    det = ScriptedDetector([_faces([0.8], [[100, 100, 200, 200]])])
    assert find_faces(det, image, 0.6, rotate=False).rotation == 0 and det.calls == 1


def test_an_embedder_without_pick_identity_is_a_usage_error(tmp_path, faces):
    args = ["align", str(faces), "-o", str(tmp_path / "o"), "--detector", str(YUNET)]
    res = CliRunner().invoke(main, [*args, "--embedder", "m.onnx"])
    assert res.exit_code == 2 and "--embedder is only used with --pick identity" in res.output


@needs_yunet
def test_the_cli_summary_names_the_record_and_the_counts(tmp_path):
    raw = _raw_folder(tmp_path)
    out = tmp_path / "out"
    res = CliRunner().invoke(
        main, ["align", str(raw), "-o", str(out), "--detector", str(YUNET), "--device", "cpu"]
    )
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "record" in text and "not plausible" in text and "turned" in text
    assert (tmp_path / "out.align.parquet").is_file()
