"""Small CLI defects of the fuzzing pass, one test each: what a user saw, now fixed."""

from __future__ import annotations

import io
import warnings

import pytest
from click.testing import CliRunner
from PIL import Image

from faceclean.cli import main
from faceclean.data.preprocess import decode_image


def test_a_large_but_allowed_photo_decodes_without_pil_warning(monkeypatch):
    """Between PIL's pixel limit and twice it, PIL printed its raw DecompressionBombWarning."""
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), (10, 20, 30)).save(buf, "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1,600 pixels: warn, not refuse
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        img = decode_image(buf.getvalue())
    assert img.size == (40, 40)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # over twice the limit: an error
    with pytest.raises(Exception, match="too large"):
        decode_image(buf.getvalue())


@pytest.mark.parametrize("verb", ["train", "search"])
def test_input_size_below_what_the_backbone_takes_is_an_option_error(verb):
    """The help said 16 (search) and 8 (train) where the backbone refuses below 32."""
    help_text = CliRunner().invoke(main, [verb, "--help"]).output
    assert "--input-size" in help_text and "16<=" not in help_text and "x>=8" not in help_text
    res = CliRunner().invoke(main, [verb, "--input-size", "16", "x"])
    assert res.exit_code == 2 and "--input-size" in res.output and "32" in res.output
    assert res.output.strip().count("\n") == 0
