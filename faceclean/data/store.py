"""The embedding store: one Parquet file, one row per image (see DESIGN.md, Contracts).

Columns: ``path`` string, ``label`` int64, ``identity`` string, ``embedding``
fixed_size_list<float32|float16>[dim] (L2-normalised), ``norm`` float32 (raw feature norm).
File metadata key ``faceclean`` holds JSON: model sha256, preprocessing, flip, dim, dataset
root, faceclean version. Files are written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from faceclean.errors import FacecleanError
from faceclean.outputs import tmp_sibling

METADATA_KEY = b"faceclean"
DTYPES = {"float32": pa.float32(), "float16": pa.float16()}


def embedding_schema(dim: int, dtype: str = "float32", metadata: dict | None = None) -> pa.Schema:
    """The Arrow schema of an embedding store of dimension ``dim``."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, not {dtype!r}")
    schema = pa.schema(
        [
            ("path", pa.string()),
            ("label", pa.int64()),
            ("identity", pa.string()),
            ("embedding", pa.list_(DTYPES[dtype], dim)),
            ("norm", pa.float32()),
        ]
    )
    if metadata is not None:
        schema = schema.with_metadata({METADATA_KEY: json.dumps(metadata).encode()})
    return schema


def embedding_table(
    paths: list[str],
    labels: np.ndarray,
    identities: list[str],
    embeddings: np.ndarray,
    norms: np.ndarray,
    schema: pa.Schema,
) -> pa.Table:
    """Build a table in the store's schema from plain arrays (embeddings: [N, dim])."""
    value_type = schema.field("embedding").type.value_type
    dim = schema.field("embedding").type.list_size
    flat = pa.array(np.ascontiguousarray(embeddings).reshape(-1), type=pa.float32())
    if value_type != pa.float32():
        flat = flat.cast(value_type)
    return pa.table(
        {
            "path": pa.array(paths, pa.string()),
            "label": pa.array(np.asarray(labels, np.int64)),
            "identity": pa.array(identities, pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(flat, dim),
            "norm": pa.array(np.asarray(norms, np.float32)),
        },
        schema=schema,
    )


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path; on success rename it to ``path``, on error delete it."""
    path = Path(path)
    tmp = tmp_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def sibling(path: Path, suffix: str) -> Path:
    """``x.parquet`` -> ``x<suffix>``: where a file's companions (truth, pairs, failures) go."""
    return path.with_name(path.name.removesuffix(".parquet") + suffix)


def write_tables(*pairs: tuple[pa.Table, Path]) -> None:
    """Write each (table, path) as Parquet, each atomically."""
    for table, path in pairs:
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)


# The metadata keys code reads as more than an opaque value, and the JSON types they must
# have: a file can declare anything, and a number where a folder name belongs would reach
# Path() as a traceback.
_METADATA_TYPES = {
    "dataset": str,
    "num_classes": int,
    "dim": int,
    "preprocessing": dict,
    "flip": bool,
    "shard": list,
}


def parse_metadata(raw: bytes | None, path: str | Path) -> dict:
    """The ``faceclean`` metadata (JSON bytes from the Parquet schema) as a dict, ``{}`` when
    absent; raises FacecleanError naming ``path`` when it is not a JSON object or a key in
    :data:`_METADATA_TYPES` has another type."""
    if raw is None:
        return {}
    try:
        meta = json.loads(raw)
    except ValueError:  # also UnicodeDecodeError
        raise FacecleanError("its faceclean metadata is not JSON", path) from None
    if not isinstance(meta, dict):
        raise FacecleanError("its faceclean metadata is not a JSON object", path)
    for key, kind in _METADATA_TYPES.items():
        value = meta.get(key)
        if value is not None and (
            not isinstance(value, kind) or isinstance(value, bool) != (kind is bool)
        ):
            raise FacecleanError(
                f"its faceclean metadata has a malformed {key!r} ({type(value).__name__}, "
                f"not {kind.__name__})",
                path,
            )
    return meta


def read_metadata(path: str | Path) -> dict:
    """The ``faceclean`` metadata of an embedding store (empty dict if absent)."""
    return parse_metadata((pq.read_schema(path).metadata or {}).get(METADATA_KEY), path)


def open_store(path: str | Path) -> pq.ParquetFile:
    """Open an embedding store, checking its schema; raises FacecleanError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FacecleanError("embedding file not found", path)
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:
        raise FacecleanError(f"not a Parquet file ({str(e).splitlines()[0][:100]})", path) from None
    schema = pf.schema_arrow
    expected = {"path": pa.string(), "label": pa.int64(), "embedding": None}
    for name, typ in expected.items():
        if name not in schema.names:
            raise FacecleanError(
                f"not an embedding store: column '{name}' is missing "
                f"(has: {', '.join(schema.names)})",
                path,
            )
        if typ is not None and schema.field(name).type != typ:
            raise FacecleanError(
                f"column '{name}' has type {schema.field(name).type}, expected {typ}", path
            )
    emb = schema.field("embedding").type
    if not pa.types.is_fixed_size_list(emb) or emb.value_type not in DTYPES.values():
        raise FacecleanError(
            f"column 'embedding' has type {emb}, expected fixed_size_list<float32|float16>[dim]",
            path,
        )
    _meta(pf, path)  # malformed metadata is refused here, before any work
    return pf


def as_paths(paths) -> list[Path]:
    """One path or several (the shards of a sharded extraction) as a list of Paths."""
    if isinstance(paths, str | Path):
        return [Path(paths)]
    out = [Path(p) for p in paths]
    if not out:
        raise FacecleanError("no embedding file given")
    return out


def open_stores(paths) -> list[tuple[Path, pq.ParquetFile]]:
    """Open one or several embedding stores that must come from one extraction.

    Shards given together must share the embedding dimension and, where their metadata
    records them, the model (sha256), the preprocessing, flip TTA and the label space.
    Stores with different label spaces are accepted only when every label means the same
    identity in all of them (read from the ``identity`` column); otherwise two independent
    extractions' label 0 would silently become one class. Raises FacecleanError naming the
    shard at fault.
    """
    given = as_paths(paths)
    _refuse_repeats(given)
    stores = [(p, open_store(p)) for p in given]
    first, first_pf = stores[0]
    dim = first_pf.schema_arrow.field("embedding").type.list_size
    for p, pf in stores[1:]:
        other = pf.schema_arrow.field("embedding").type.list_size
        if other != dim:
            raise FacecleanError(
                f"embedding dimension {other} does not match {dim} of {first.name}", p
            )
    if len(stores) > 1:
        from faceclean.data.shared_rows import refuse_shared_rows

        _check_one_extraction(stores)
        _check_shards(stores)
        refuse_shared_rows(stores, [_meta(pf, p).get("dataset") for p, pf in stores])
    return stores


def _refuse_repeats(paths: list[Path]) -> None:
    """One store named twice (also through another spelling, a symlink or a hard link)
    would be read as every image twice, which also defeats leave-one-out centroids."""
    seen: dict[tuple[int, int], Path] = {}
    for p in paths:
        try:
            st = p.stat()
        except OSError:
            continue  # open_store names the missing or unreadable file
        key = (st.st_dev, st.st_ino)
        if key in seen:
            raise FacecleanError(f"given twice (also as {seen[key]}): each store is read once", p)
        seen[key] = p


def _check_shards(stores: list[tuple[Path, pq.ParquetFile]]) -> None:
    """Shards given together must be distinct slices of one split (``extract --shard I/N``):
    ``0/2`` with ``1/3`` would miss some rows and double others, a shard twice or a shard
    beside the whole extraction would double its rows."""
    slices: dict[int, Path] = {}
    count = None
    metas = [(p, _meta(pf, p)) for p, pf in stores]  # parsed once per store
    sharded = [(p, m) for p, m in metas if "shard" in m]
    if not sharded:
        return  # independent stores: open_stores has checked their label spaces agree
    spaces = {m.get("label_space") for _, m in sharded}
    for p, meta in metas:
        if "shard" not in meta and meta.get("label_space") in spaces:
            raise FacecleanError(
                "the whole extraction given with its own shards: its rows would be read "
                "twice; give either the whole store or its shards",
                p,
            )
    for p, meta in sharded:
        shard = meta["shard"]
        try:
            i, n = (int(v) for v in shard)
        except (TypeError, ValueError):
            raise FacecleanError(f"its metadata records a malformed shard {shard!r}", p) from None
        if count is None:
            count = (n, p)
        elif n != count[0]:
            raise FacecleanError(
                f"shard {i}/{n} given with shards of {count[0]} ({count[1].name}): shards of "
                "different splits miss some rows and double others; use one --shard I/N split",
                p,
            )
        if i in slices:
            raise FacecleanError(
                f"shard {i}/{n} is given twice (also {slices[i].name}): its rows would be "
                "read twice",
                p,
            )
        slices[i] = p


_SAME = (("model_sha256", "model (sha256)"), ("preprocessing", "preprocessing"), ("flip", "flip"))


def _meta(pf: pq.ParquetFile, path: Path) -> dict:
    return parse_metadata((pf.schema_arrow.metadata or {}).get(METADATA_KEY), path)


def _check_one_extraction(stores: list[tuple[Path, pq.ParquetFile]]) -> None:
    first, first_pf = stores[0]
    ref = _meta(first_pf, first)
    differ_labels = any(
        _meta(pf, p).get("label_space") != ref.get("label_space") for p, pf in stores
    )
    for p, pf in stores[1:]:
        meta = _meta(pf, p)
        for key, what in _SAME:
            if key in ref and key in meta and ref[key] != meta[key]:
                raise FacecleanError(
                    f"not from the same extraction as {first.name}: the {what} differs; "
                    "shards given together must come from one model and preprocessing",
                    p,
                )
    if not differ_labels:
        return
    names: dict[int, tuple[str, Path]] = {}
    labels: dict[str, tuple[int, Path]] = {}
    for p, pf in stores:
        if "identity" not in pf.schema_arrow.names:
            raise FacecleanError(
                f"its label space differs from {first.name}'s and it has no identity column "
                "to check that the labels mean the same identities",
                p,
            )
        # One row group at a time: memory holds the distinct (label, identity) pairs only.
        pairs = set()
        for batch in iter_row_groups(pf, ["label", "identity"], 1 << 20):
            distinct = pa.Table.from_batches([batch]).group_by(["label", "identity"]).aggregate([])
            pairs.update(
                zip(distinct["label"].to_pylist(), distinct["identity"].to_pylist(), strict=True)
            )
        for label, identity in sorted(pairs, key=lambda x: (x[0], str(x[1]))):
            other = labels.setdefault(identity, (label, p))
            if other[0] != label:
                raise FacecleanError(
                    f"identity {identity!r} has label {label} here but {other[0]} in "
                    f"{other[1].name}: independent extractions; extract them together",
                    p,
                )
            seen = names.setdefault(label, (identity, p))
            if seen[0] != identity:
                raise FacecleanError(
                    f"label {label} is identity {identity!r} here but {seen[0]!r} in "
                    f"{seen[1].name}: independent extractions whose labels collide; extract "
                    "them together (one list file or folder) to share one label space",
                    p,
                )


def iter_row_groups(
    pf: pq.ParquetFile, columns: list[str], batch_rows: int, groups: range | None = None
) -> Iterator:
    """Record batches of at most ``batch_rows``, reading one row group at a time (those in
    ``groups``, default all: a batch never spans two row groups, so a range of them gives
    the same batches as the whole file does there).

    ``ParquetFile.iter_batches`` reads ahead and its peak memory grew with the file
    (measured: 1.2 GB at 250K x 512-d rows, 2.6 GB at 1M); one row group at a time stays
    flat (1.0 GB at both). Memory is bounded by the largest row group.
    """
    for i in range(pf.num_row_groups) if groups is None else groups:
        table = pf.read_row_group(i, columns=columns)
        yield from table.to_batches(max_chunksize=batch_rows)
        del table


def iter_embeddings(
    path: str | Path, columns: tuple[str, ...] = ("label", "embedding"), batch_rows: int = 65536
) -> Iterator[dict[str, np.ndarray]]:
    """Stream an embedding store in batches: dicts of NumPy arrays, ``embedding`` as
    float32 [n, dim]. Memory is bounded by ``batch_rows`` and the row-group size (faceclean
    writes row groups of at most 65536 rows), whatever the file size."""
    pf = open_store(path)
    dim = pf.schema_arrow.field("embedding").type.list_size
    for batch in iter_row_groups(pf, list(columns), batch_rows):
        out = {}
        for name in columns:
            col = batch.column(name)
            if name == "embedding":
                values = col.flatten().to_numpy(zero_copy_only=False)
                out[name] = values.astype(np.float32, copy=False).reshape(-1, dim)
            else:
                out[name] = col.to_numpy(zero_copy_only=False)
        yield out


def read_parquet_columns(path: str | Path, columns: dict, what: str) -> pa.Table:
    """``columns`` (name -> Arrow type) of a Parquet table that must hold them, cast to those
    types; any other file (not Parquet, empty, missing a column, a column of another type)
    is one FacecleanError naming ``path`` and ``what`` it should have been."""
    try:
        names = pq.read_schema(path).names
    except Exception as e:
        msg = str(e).splitlines()[0][:100]
        raise FacecleanError(f"not a Parquet {what} ({msg})", path) from None
    missing = [c for c in columns if c not in names]
    if missing:
        raise FacecleanError(
            f"not a {what}: column(s) {', '.join(missing)} missing (has: {', '.join(names)})",
            path,
        )
    table = pq.read_table(path, columns=list(columns))  # only what is needed
    try:
        return table.cast(pa.schema(list(columns.items())))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        types = ", ".join(f"{c} {table.schema.field(c).type}" for c in columns)
        raise FacecleanError(f"not a {what}: wrong column types ({types})", path) from None
