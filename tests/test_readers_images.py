"""Images as users bring them: rotated phone JPEGs, 16-bit PNGs, GIFs, things that are not
regular files, and data that is not an image. Each is read right or listed as a failure with
a message that says what is wrong; none hangs or raises a traceback."""

from __future__ import annotations

import io
import os
import threading

import numpy as np
import pytest
from PIL import Image

from faceclean.data import datasets
from faceclean.data.extraction import extract
from faceclean.data.preprocess import ImageError, decode_image


def _jpeg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95, **kw)
    return buf.getvalue()


def _face(faces) -> Image.Image:
    return Image.open(faces / "id_0000" / "00.png").convert("RGB")


def _cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_exif_orientation_is_applied(faces, tiny_model, tmp_path):
    upright = _face(faces)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display": stored turned counter-clockwise
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    root = tmp_path / "set"
    (root / "a").mkdir(parents=True)
    (root / "a" / "upright.jpg").write_bytes(_jpeg(upright))
    (root / "a" / "phone.jpg").write_bytes(_jpeg(stored, exif=exif))
    (root / "a" / "sideways.jpg").write_bytes(_jpeg(stored))  # no tag: really sideways
    ref = np.asarray(decode_image(_jpeg(upright)), np.float32)
    assert np.abs(np.asarray(decode_image(_jpeg(stored, exif=exif)), np.float32) - ref).mean() < 3
    table = extract(root, tiny_model).table
    emb = {
        p.split("/")[1]: e
        for p, e in zip(table["path"].to_pylist(), table["embedding"].to_pylist(), strict=True)
    }
    assert _cos(np.array(emb["phone.jpg"]), np.array(emb["upright.jpg"])) > 0.99
    # the same image without the tag is a different picture to the model (the old behaviour)
    assert _cos(np.array(emb["sideways.jpg"]), np.array(emb["upright.jpg"])) < 0.99


def test_16_bit_png_is_scaled_not_saturated():
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(ramp).save(buf, "PNG")
    assert Image.open(io.BytesIO(buf.getvalue())).mode.startswith("I;16")
    got = np.asarray(decode_image(buf.getvalue()))
    assert got.shape == (64, 64, 3) and (got[..., 0] == got[..., 2]).all()
    assert np.abs(got[..., 0].astype(float) - ramp / 257.0).max() <= 0.51
    assert 120 < got.mean() < 135  # a plain convert("RGB") gives ~254 (all white)


def test_gif_first_frame():
    frames = [Image.new("RGB", (32, 32), c) for c in [(200, 10, 10), (10, 200, 10)]]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    got = np.asarray(decode_image(buf.getvalue()))
    assert tuple(got[0, 0]) == (200, 10, 10)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"hello, this is text", r"^not an image$"),
        (_jpeg(Image.new("RGB", (64, 64), (9, 9, 9)))[:200], r"^truncated JPEG$"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 30, r"^truncated PNG$"),
        (b"", r"^not an image$"),
    ],
)
def test_undecodable_data_says_what_is_wrong(data, message):
    with pytest.raises(ImageError, match=message):
        decode_image(data)


def _extract_with_guard(*args, **kwargs):
    """Run extract in a thread; a hang (a FIFO opened for reading) fails the test instead
    of blocking the suite forever."""
    box = {}

    def run():
        try:
            box["result"] = extract(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001  (handed back to the test)
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(120)
    assert not t.is_alive(), "extract hung on a non-regular file"
    if "error" in box:
        raise box["error"]
    return box["result"]


def test_non_regular_files_and_bad_data_are_listed_failures(faces, tiny_model, tmp_path):
    root = tmp_path / "set"
    a = root / "a"
    a.mkdir(parents=True)
    good = (faces / "id_0000" / "00.png").read_bytes()
    for i in range(8):
        (a / f"good{i}.png").write_bytes(good)
    os.mkfifo(a / "pipe.jpg")
    os.symlink("/dev/zero", a / "zero.jpg")
    os.symlink("loop.jpg", a / "loop.jpg")
    (a / "text.jpg").write_text("not an image at all")
    (a / "cut.jpg").write_bytes(_jpeg(_face(faces))[:500])
    out = tmp_path / "e.parquet"
    result = _extract_with_guard(root, tiny_model, out)
    reasons = {p.split("/")[1]: msg for p, _, msg in result.failures}
    assert reasons == {
        "pipe.jpg": "not a regular file (a FIFO), not read",
        "zero.jpg": "not a regular file (a device), not read",
        "loop.jpg": "cannot open: symlink loop",
        "text.jpg": "not an image",
        "cut.jpg": "truncated JPEG",
    }
    assert result.num_written == 8
    listed = result.failures_path.read_text().splitlines()
    assert len(listed) == 6 and all("\n" not in line for line in listed)


def test_unreadable_identity_folder_is_a_listed_failure(faces, tiny_model, tmp_path, monkeypatch):
    root = tmp_path / "set"
    for name in ("a", "b", "locked"):
        (root / name).mkdir(parents=True)
        for i in range(2):
            (root / name / f"{i}.png").write_bytes((faces / "id_0000" / "00.png").read_bytes())
    os.chmod(root / "locked", 0)
    if os.geteuid() == 0:  # root lists a chmod-0 folder anyway: make scandir refuse it
        real = datasets._scan

        def scan(path):
            if str(path).endswith("locked"):
                raise PermissionError(13, "Permission denied", str(path))
            return real(path)

        monkeypatch.setattr(datasets, "_scan", scan)
    try:
        result = extract(root, tiny_model, tmp_path / "e.parquet")
    finally:
        os.chmod(root / "locked", 0o755)
    assert result.num_written == 4
    assert result.failures[0] == (
        "locked/",
        -1,
        "cannot list the identity folder: Permission denied",
    )
    assert "locked/\t-1\tcannot list" in result.failures_path.read_text()
