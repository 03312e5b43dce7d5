"""`clean --format rec` writes what arcface_torch-style loaders need: images at the model's
input size (copied byte for byte when they already are plain JPEG/PNG at that size, else
fitted as extract did and stored as JPEG q95) and the ``property`` file."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from faceclean.cleaning.clean import clean
from faceclean.data.datasets import read_rec
from faceclean.data.extraction import extract
from faceclean.data.preprocess import decode_image, fit_image
from faceclean.data.synthetic import write_embedding_store
from faceclean.errors import FacecleanError


def _mixed_set(root, faces):
    """Two identities: 112x112 PNGs (copyable), a 92x112 PGM, a 100x100 JPEG, a 16-bit PNG."""
    for k, ident in enumerate(("id_0000", "id_0001")):
        folder = root / f"p{k}"
        folder.mkdir(parents=True)
        src = sorted((faces / ident).iterdir())
        for p in src[:3]:
            (folder / p.name).write_bytes(p.read_bytes())
        img = Image.open(src[3]).convert("RGB")
        img.convert("L").crop((10, 0, 102, 112)).save(folder / "orl.pgm")
        img.resize((100, 100)).save(folder / "small.jpg", quality=90)
        grey16 = (np.asarray(img.convert("L"), np.uint16) * 257).astype(np.uint16)
        Image.fromarray(grey16).save(folder / "deep.png")
    return root


def test_rec_holds_model_size_images_and_property(faces, tiny_model, tmp_path):
    data = _mixed_set(tmp_path / "set", faces)
    extract(data, tiny_model, tmp_path / "e.parquet", fit="pad")
    r = clean(tmp_path / "e.parquet", tmp_path / "c", 0.0, 0.999, fmt="rec")
    assert (tmp_path / "c" / "property").read_text() == f"{r.num_clean_classes},112,112\n"
    ds = read_rec(r.outputs["clean"])
    assert len(ds) == 12
    kept_bytes = 0
    for i in range(len(ds)):
        stored = ds.read(i)
        img = Image.open(io.BytesIO(stored))
        assert img.size == (112, 112) and img.format in ("JPEG", "PNG")
        # the same images, found by their pixels: the original, fitted as extract did
        best = None
        for p in data.rglob("*.*"):
            want = np.asarray(fit_image(decode_image(p.read_bytes()), 112, 112, "pad"), float)
            diff = np.abs(np.asarray(decode_image(stored), float) - want).mean()
            if best is None or diff < best[0]:
                best = (diff, p)
        assert best[0] < 3.0, best  # JPEG q95 of a noisy re-encoded image
        if best[1].suffix == ".png" and best[1].name != "deep.png":
            assert stored == best[1].read_bytes()  # already at size: byte for byte
            kept_bytes += 1
        else:
            assert img.format == "JPEG"
    assert kept_bytes == 6
    # a model that reads this .rec sees the faces extract saw
    again = extract(r.outputs["clean"], tiny_model, fit="pad").table
    assert again.num_rows == 12


def test_rec_needs_the_recorded_input_size_and_leaves_nothing(tmp_path, faces):
    x = np.random.default_rng(0).standard_normal((6, 8)).astype(np.float32)
    write_embedding_store(tmp_path / "s.parquet", x, np.repeat([0, 1], 3))
    with pytest.raises(FacecleanError, match=r"--format rec needs the model input size"):
        clean(tmp_path / "s.parquet", tmp_path / "c", 0.0, 0.999, fmt="rec", data_root=faces)
    assert not (tmp_path / "c").exists()
