"""`faceclean extract --shard I/N`: shards joined equal one whole extraction, row for row."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from faceclean.cleaning.filter import class_sums
from faceclean.cli import main
from faceclean.data.extraction import extract
from faceclean.data.sharding import parse_shard, shard_bounds, shard_path
from faceclean.data.store import read_metadata
from faceclean.errors import FacecleanError


def test_shard_bounds_cover_every_row_once():
    for rows in (0, 1, 7, 48, 1001):
        for n in (1, 3, 8):
            spans = [shard_bounds(rows, i, n) for i in range(n)]
            assert spans[0][0] == 0 and spans[-1][1] == rows
            assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
            sizes = [e - s for s, e in spans]
            assert max(sizes) - min(sizes) <= 1


def test_parse_shard():
    assert parse_shard("2/3") == (2, 3) and parse_shard("all/4") == (None, 4)
    for bad in ("3/3", "1/0", "-1/2", "x/2", "1"):
        with pytest.raises(FacecleanError, match="--shard"):
            parse_shard(bad)


def _rows(table: pa.Table) -> tuple:
    return (
        table["path"].to_pylist(),
        table["label"].to_pylist(),
        table["identity"].to_pylist(),
        np.asarray(table["embedding"].to_pylist(), np.float32),
    )


def test_three_shards_joined_equal_the_whole_extraction(tmp_path, faces, tiny_model):
    whole = extract(faces, tiny_model, tmp_path / "whole.parquet", chunk_size=7)
    assert whole.num_written == 48
    out = tmp_path / "emb.parquet"
    res = CliRunner().invoke(
        main, ["extract", str(faces), "-m", str(tiny_model), "-o", str(out), "--shard", "all/3"]
    )
    assert res.exit_code == 0, res.output
    shards = [shard_path(out, i, 3) for i in range(3)]
    assert [pq.read_metadata(s).num_rows for s in shards] == [16, 16, 16]
    joined = pa.concat_tables([pq.read_table(s) for s in shards])
    a, b = _rows(pq.read_table(tmp_path / "whole.parquet")), _rows(joined)
    assert a[:3] == b[:3]
    np.testing.assert_array_equal(a[3], b[3])
    # Labels are in the whole dataset's space: the middle shard starts mid-way through it.
    meta = read_metadata(shards[1])
    assert meta["shard"] == [1, 3] and meta["num_classes"] == 8
    assert meta["label_space"] == read_metadata(tmp_path / "whole.parquet")["label_space"]
    # Cleaning reads the shards as one store.
    for x, y in zip(class_sums(shards), class_sums([tmp_path / "whole.parquet"]), strict=True):
        np.testing.assert_allclose(x, y, atol=1e-5)
    # One shard alone, as a cluster job would run it.
    res = CliRunner().invoke(
        main,
        [
            "extract",
            str(faces),
            "-m",
            str(tiny_model),
            "-o",
            str(tmp_path / "one.parquet"),
            "--shard",
            "1/3",
            "-q",
        ],
    )
    assert res.exit_code == 0, res.output
    assert _rows(pq.read_table(tmp_path / "one.parquet"))[:3] == _rows(pq.read_table(shards[1]))[:3]


def test_ray_address_needs_all_shards(tmp_path, faces, tiny_model):
    res = CliRunner().invoke(
        main,
        [
            "extract",
            str(faces),
            "-m",
            str(tiny_model),
            "-o",
            str(tmp_path / "e.parquet"),
            "--shard",
            "0/2",
            "--ray-address",
            "local",
        ],
    )
    assert res.exit_code == 2 and "--ray-address needs --shard all/N" in res.output


@pytest.mark.slow
def test_ray_tasks_give_the_same_shards(tmp_path, faces, tiny_model):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'faceclean[search]')")
    from faceclean.data.sharding import extract_shards

    local = extract_shards(extract, faces, tiny_model, tmp_path / "a.parquet", 3)
    remote = extract_shards(extract, faces, tiny_model, tmp_path / "b.parquet", 3, "local")
    assert [s["written"] for s in remote] == [s["written"] for s in local] == [16, 16, 16]
    for i in range(3):
        a = _rows(pq.read_table(shard_path(tmp_path / "a.parquet", i, 3)))
        b = _rows(pq.read_table(shard_path(tmp_path / "b.parquet", i, 3)))
        assert a[:3] == b[:3]
        np.testing.assert_allclose(a[3], b[3], atol=1e-6)


def test_shards_given_twice_or_of_different_splits_are_refused(tmp_path, faces, tiny_model):
    """Each was read as one store before: rows doubled, rows missing, exit 0."""
    out = tmp_path / "e.parquet"
    for split in ("all/2", "all/3"):
        args = ["extract", str(faces), "-m", str(tiny_model), "-o", str(out), "--shard", split]
        assert CliRunner().invoke(main, [*args, "-q"]).exit_code == 0
    whole = tmp_path / "whole.parquet"
    res = CliRunner().invoke(main, ["extract", str(faces), "-m", str(tiny_model), "-o", str(whole)])
    assert res.exit_code == 0
    a0, a1 = shard_path(out, 0, 2), shard_path(out, 1, 2)
    b1 = shard_path(out, 1, 3)
    link = tmp_path / "again.parquet"
    link.symlink_to(a0)
    copy = tmp_path / "copy.parquet"
    copy.write_bytes(a0.read_bytes())
    cases = {
        "given twice": [a0, a0, a1],
        "also as": [a0, link],
        "different splits": [a0, b1],
        "shard 0/2 is given twice": [a0, copy, a1],
        "whole extraction given with its own shards": [whole, a0, a1],
    }
    for expected, stores in cases.items():
        res = CliRunner().invoke(
            main, ["filter", *map(str, stores), "-o", str(tmp_path / "s.parquet")]
        )
        assert res.exit_code == 2, (expected, res.output)
        assert expected in res.output and res.output.strip().count("\n") == 0, res.output
    ok = CliRunner().invoke(main, ["filter", str(a0), str(a1), "-o", str(tmp_path / "s.parquet")])
    assert ok.exit_code == 0, ok.output
