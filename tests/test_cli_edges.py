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


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"{not json", "metadata is not JSON"),
        (b"[1, 2]", "metadata is not a JSON object"),
        (b'{"dataset": 5}', "metadata has a malformed 'dataset' (int, not str)"),
        (b'{"shard": "0/2"}', "metadata has a malformed 'shard'"),
        (b'{"flip": 1}', "metadata has a malformed 'flip'"),
    ],
)
def test_store_metadata_that_declares_nonsense_is_one_line(tmp_path, raw, message):
    """Each was a JSONDecodeError, AttributeError or TypeError traceback in filter/clean."""
    import pyarrow.parquet as pq

    from faceclean.data.synthetic import clustered_embeddings, write_embedding_store

    x, y = clustered_embeddings(4, 5, dim=16, seed=0)
    path = write_embedding_store(tmp_path / "e.parquet", x, y)
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata({b"faceclean": raw}), path)
    for verb in ("filter", "clean"):
        res = CliRunner().invoke(main, [verb, str(path), "-o", str(tmp_path / verb)])
        assert res.exit_code == 2, res.output
        assert f"e.parquet: its faceclean {message}" in res.output.replace("\n", " ")
        assert res.output.strip().count("\n") == 0


def _pool_model(path, shape, meta=None):
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("GlobalAveragePool", ["x"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("f", TensorProto.FLOAT, [shape[0], 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if meta:
        helper.set_model_props(model, {"faceclean.preprocessing": meta})
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(
    "shape, meta, message",
    [
        ([1, 3, 100000, 100000], None, "declares 100000x100000 pixels"),
        ([0, 3, 112, 112], None, "onnxruntime cannot run the model on 112x112 images"),
        ([1, 3, 112, 112], "{bad", "recorded preprocessing (faceclean.preprocessing) is malformed"),
        ([1, 3, 112, 112], "[1]", "recorded preprocessing (faceclean.preprocessing) is malformed"),
        (
            [1, 3, 112, 112],
            '{"mean": [0, 0, NaN], "std": [1, 1, 1], "channels": "RGB", "height": 112, '
            '"width": 112}',
            "has a NaN or infinite value",
        ),
    ],
)
def test_a_model_declaring_nonsense_is_one_line(faces, tmp_path, shape, meta, message):
    """Each was a traceback in extract (one allocated 447 GiB for its probe)."""
    model = _pool_model(tmp_path / "m.onnx", shape, meta)
    res = CliRunner().invoke(
        main, ["extract", str(faces), "-m", str(model), "-o", str(tmp_path / "e.parquet"), "-q"]
    )
    assert res.exit_code == 2, res.output
    assert "m.onnx: " in res.output and message in res.output.replace("\n", " ")
    assert res.output.strip().count("\n") == 0 and not (tmp_path / "e.parquet").exists()


@pytest.mark.parametrize("named", [False, True])
def test_a_full_disk_names_the_output_not_a_temporary(tmp_path, monkeypatch, named):
    """A full disk met through an open file was reported without any path, and one met on a
    temporary named the internal `.NAME.tmp-PID`."""
    import errno

    import faceclean.cleaning.filter as filter_module
    from faceclean.data.synthetic import clustered_embeddings, write_embedding_store

    x, y = clustered_embeddings(4, 5, dim=16, seed=0)
    store = write_embedding_store(tmp_path / "e.parquet", x, y)
    out = tmp_path / "s.parquet"
    where = str(tmp_path / ".s.parquet.tmp-4242") if named else None

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", where)

    monkeypatch.setattr(filter_module, "filter_store", full)
    res = CliRunner().invoke(main, ["filter", str(store), "-o", str(out)])
    assert res.exit_code == 2, res.output
    assert res.output.strip() == f"error: {out}: No space left on device"
