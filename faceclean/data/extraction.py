"""`faceclean extract`: face images -> L2-normalised embeddings in a Parquet store.

Pipeline: a thread pool decodes and normalises batches of images (PIL and NumPy release the
GIL) while the main thread runs the ONNX model on the previous batch, so the model, not the
decoder, sets the pace. The dataset is cut into fixed chunks of ``chunk_size`` images; each
finished chunk is written atomically to ``<output>.partial/``, so a killed run started again
with the same arguments skips the finished chunks. When all chunks are done they are joined
into the output (written under a temporary name, then renamed) and the partial folder goes.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from faceclean import __version__
from faceclean.data.datasets import FaceDataset, open_dataset
from faceclean.data.embed import embed_batch
from faceclean.data.onnx_model import FaceModel
from faceclean.data.parallel import ordered_map
from faceclean.data.partstore import PART_KEY, PartStore
from faceclean.data.preprocess import (
    PRESETS,
    ImageError,
    Preprocessing,
    load_pixels,
    normalise,
)
from faceclean.data.sharding import shard_of
from faceclean.data.store import embedding_schema, embedding_table, sibling
from faceclean.errors import FacecleanError
from faceclean.outputs import refuse_inputs
from faceclean.progress import RowProgress


@dataclass
class ExtractResult:
    """What a run of :func:`extract` did. ``table`` is set only when no output was given."""

    output: Path | None
    table: pa.Table | None
    num_images: int
    num_written: int
    num_failed: int
    num_resized: int
    num_resumed: int
    failures: list[tuple[str, int, str]]
    failures_path: Path | None
    batch_mode: str
    providers: list[str]
    preprocessing: Preprocessing
    seconds: float
    warnings: list[str] = field(default_factory=list)
    source: str = ""
    batch_choice: str | None = None  # how the model ran (see FaceModel.tune)
    batch_timings: list[tuple[str, float]] = field(default_factory=list)  # img/s, best first

    @property
    def images_per_second(self) -> float:
        done = self.num_images - self.num_resumed
        return done / self.seconds if self.seconds > 0 else float("nan")


def resolve_preprocessing(
    model: FaceModel,
    preset: str | None = None,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
    channels: str | None = None,
    fit: str | None = None,
) -> Preprocessing:
    """The preprocessing to use, stated by the user or recorded in the model, never guessed.

    A model that records its preprocessing (as ``faceclean export`` does) needs no flags; a
    flag that contradicts the record is an error. A model without a record needs ``preset``
    or both ``mean`` and ``std``. Values are in 0-255 pixel units.
    """
    if preset is not None and preset not in PRESETS:
        raise FacecleanError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    base = PRESETS[preset] if preset else {}
    asked = {
        "mean": tuple(mean) if mean is not None else base.get("mean"),
        "std": tuple(std) if std is not None else base.get("std"),
        "channels": channels or base.get("channels"),
    }
    recorded = model.preprocessing
    if recorded is not None:
        for key, value in asked.items():
            have = getattr(recorded, key)
            if value is None:
                continue
            same = value == have if key == "channels" else np.allclose(value, have, atol=1e-3)
            if not same:
                raise FacecleanError(
                    f"model records preprocessing {key}={have} but {value} was asked for; "
                    "drop the flag or fix the model's metadata",
                    model.path,
                )
        return Preprocessing(
            recorded.mean,
            recorded.std,
            recorded.channels,
            model.height,
            model.width,
            fit or recorded.fit,
        )
    if asked["mean"] is None or asked["std"] is None:
        raise FacecleanError(
            "model records no preprocessing; say how images are normalised with --preset "
            f"({'|'.join(PRESETS)}) or --mean and --std",
            model.path,
        )
    return Preprocessing(
        asked["mean"],
        asked["std"],
        asked["channels"] or "RGB",
        model.height,
        model.width,
        fit or "resize",
    )


def label_space(identities: list[str]) -> str:
    """sha256 of the label -> identity mapping: stores that agree on it share labels."""
    return hashlib.sha256("\n".join(identities).encode()).hexdigest()


def check_output(output: Path, overwrite: bool, inputs) -> None:
    """Refuse, before any work, an existing output without ``overwrite`` and any output
    that is one of the inputs (overwrite or not)."""
    refuse_inputs([output], [p for p in inputs if isinstance(p, str | Path)])  # not a FaceModel
    if output.is_dir():
        raise FacecleanError("output is a folder; give a .parquet file name", output)
    if output.suffix.lower() not in (".parquet", ".pq"):
        # The store is always Parquet: a .csv or .npy name would hide that from the user.
        raise FacecleanError("the embedding store is Parquet: name it .parquet", output)
    if output.exists() and not overwrite:
        raise FacecleanError("output already exists; pass --overwrite to replace it", output)
    if not output.parent.is_dir():
        raise FacecleanError("the output's folder does not exist", output.parent)


def _too_many_failures(ds, failed: int, total: int, max_failures: float, failures) -> None:
    example = ""
    if failures:
        i, msg = failures[0][0], failures[0][-1]
        example = f"; e.g. {ds.path(i) if isinstance(i, int) else i}: {msg}"
    what = (
        f"all {total} images failed"
        if failed >= total
        else f"{failed} of {total} images failed, more than --max-failures {max_failures:g}"
    )
    raise FacecleanError(f"{what}{example}; no output written", ds.root)


def _decode_batch(ds: FaceDataset, indices: np.ndarray, spec: Preprocessing):
    """Decode a batch; faulty images are reported, not raised. Runs in a worker thread."""
    tensors, ok, failures, resized = [], [], [], 0
    for i in indices:
        try:
            x, was_resized = load_pixels(ds.read(int(i)), spec)
        except FacecleanError as e:
            failures.append((int(i), e.message))
            continue
        except ImageError as e:  # already says what is wrong ("truncated JPEG")
            failures.append((int(i), str(e)))
            continue
        except Exception as e:  # PIL raises many types for corrupt data
            failures.append((int(i), f"{type(e).__name__}: {str(e)[:160]}"))
            continue
        tensors.append(x)
        ok.append(int(i))
        resized += was_resized
    if tensors:
        x = normalise(np.stack(tensors), spec)
    else:
        x = np.empty((0, 3, spec.height, spec.width), np.float32)
    return x, np.asarray(ok, np.int64), failures, resized


def extract(
    data: str | Path | FaceDataset,
    model: str | Path | FaceModel,
    output: str | Path | None = None,
    *,
    root: str | Path | None = None,
    preset: str | None = None,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
    channels: str | None = None,
    fit: str | None = None,
    flip: bool = False,
    batch_size: int = 64,
    workers: int = 2,
    device: str = "auto",
    dtype: str = "float32",
    chunk_size: int = 8192,
    overwrite: bool = False,
    max_failures: float = 0.5,
    list_format: str = "auto",
    output_name: str | None = None,
    progress: bool = False,
    on_chunk: Callable[[int], None] | None = None,
    shard: tuple[int, int] | None = None,
    tune: bool | str = "auto",
) -> ExtractResult:
    """Embed every image of a face dataset with an ONNX model.

    Args:
        data: an image folder, a ``path label`` list file, a ``.rec``, or a FaceDataset.
        model: an ONNX model path or a loaded FaceModel.
        output: the Parquet file to write. None returns the table in ``result.table``.
        root: folder the paths of a list file are relative to.
        preset, mean, std, channels, fit: preprocessing; see :func:`resolve_preprocessing`.
        flip: add the mirrored image's features before normalising (flip TTA).
        batch_size: images per model call. workers: decoding threads.
        device: "auto" (CUDA when present), "cpu" or "cuda".
        dtype: embedding storage type, "float32" or "float16".
        chunk_size: images per resumable unit and per Parquet row group.
        overwrite: replace an existing output instead of refusing.
        max_failures: the share of images (0-1) that may fail before the run is an error;
            a run where every image fails is always one. Nothing is left behind then.
        list_format: a list file's layout, "auto" or see :mod:`faceclean.data.listfile`.
        output_name: the model output holding the embedding, when it has several.
        progress: show a progress bar on stderr.
        on_chunk: called with the chunk number after each chunk is stored (for tests).
        shard: (i, n) extracts only slice i of n, labels those of the whole dataset (see
            :mod:`faceclean.data.sharding`).
        tune: time the model as shipped and made-dynamic at a few batch sizes on the first
            batch and run the fastest (:meth:`FaceModel.tune`; ``result.batch_choice``):
            True, False, or "auto" (when the run has at least 20x the images the timing
            runs, so that it costs under 5%).

    Returns:
        An :class:`ExtractResult`. Rows keep dataset order; images that fail to decode are
        skipped and listed in ``failures`` (and in ``<output>.failures.tsv``).
    """
    t0 = time.perf_counter()
    if batch_size < 1 or chunk_size < 1 or workers < 1:
        raise FacecleanError("batch size, chunk size and workers must be at least 1")
    if not 0 <= max_failures <= 1:
        raise FacecleanError(f"max_failures is a share between 0 and 1, not {max_failures}")
    output = Path(output) if output is not None else None
    if output is not None:
        check_output(output, overwrite, [data, model, root])
    ds = data if isinstance(data, FaceDataset) else open_dataset(data, root, list_format)
    if shard is not None:
        ds = shard_of(ds, *shard)
    fm = model if isinstance(model, FaceModel) else FaceModel(model, device, output=output_name)
    spec = resolve_preprocessing(fm, preset, mean, std, channels, fit)
    metadata = {
        "model": str(fm.path.resolve()),
        "model_sha256": fm.sha256,
        "model_output": fm.output_name,
        "preprocessing": spec.to_dict(),
        "flip": flip,
        "dim": fm.dim,
        "dtype": dtype,
        "dataset": str(Path(ds.root).resolve()),
        "dataset_kind": ds.kind,
        "dataset_source": ds.source,
        "num_classes": ds.num_classes,
        "label_space": label_space(ds.identities),
        "faceclean_version": __version__,
    }
    if shard is not None:
        metadata["shard"] = list(shard)
    schema = embedding_schema(fm.dim, dtype, metadata)
    n = len(ds)
    n_chunks = (n + chunk_size - 1) // chunk_size
    store = PartStore(
        output, schema, {**metadata, "listing": ds.fingerprint(), "chunk_size": chunk_size, "n": n}
    )
    done = store.finished_chunks(n_chunks)
    resumed = sum(min(chunk_size, n - c * chunk_size) for c in done)
    unreadable = [(p, -1, msg) for p, msg in ds.unreadable]
    failed = len(unreadable) + len(store.failures_in(sorted(done)))
    total = n + len(unreadable)

    bar = RowProgress(progress, "extract", n, resumed, unit="img")
    pending = [c for c in range(n_chunks) if c not in done]
    bounds = {c: (c * chunk_size, min((c + 1) * chunk_size, n)) for c in pending}
    # A generator, not a list: 42M images would otherwise hold 650K index arrays at once.
    batches = (
        (c, np.arange(s, min(s + batch_size, bounds[c][1])))
        for c in pending
        for s in range(*bounds[c], batch_size)
    )
    per_chunk: dict[int, list] = {c: [] for c in pending}
    remaining = {c: -(-(e - s) // batch_size) for c, (s, e) in bounds.items()}
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="decode") as pool:
            decoded = ordered_map(
                pool, lambda b: _decode_batch(ds, b[1], spec), batches, 2 * workers
            )
            for (c, rows), (x, ok, failures, resized) in decoded:
                if fm.batch_choice is None and len(x) and _worth_tuning(tune, fm, x, n - resumed):
                    fm.tune(x)  # the fastest way to run the model, timed on real images
                emb, norms = (
                    embed_batch(fm, x, flip) if len(x) else (np.empty((0, fm.dim)), np.empty(0))
                )
                finite = np.isfinite(emb).all(axis=1) & (norms > 0)
                if len(x) and not finite.any():
                    raise FacecleanError(
                        "the model gave NaN/inf or zero features for a whole batch; the model "
                        "and its preprocessing do not match",
                        fm.path,
                    )
                failures += [(int(i), "model output is NaN/inf or zero") for i in ok[~finite]]
                failed += len(failures)
                if failed > max_failures * total:  # no later success can bring it back
                    _too_many_failures(ds, failed, total, max_failures, failures)
                per_chunk[c].append((ok[finite], emb[finite], norms[finite], failures, resized))
                bar.advance(len(rows))
                remaining[c] -= 1
                if remaining[c] == 0:
                    store.write_chunk(c, _chunk_table(ds, per_chunk.pop(c), schema))
                    if on_chunk:
                        on_chunk(c)
    except BaseException as e:
        if isinstance(e, FacecleanError):  # the run cannot succeed; resuming would not help
            store.discard()
        raise
    finally:
        bar.close()
    if failed >= total:
        failures = store.failures_in(range(n_chunks))
        store.discard()
        _too_many_failures(ds, failed, total, max_failures, unreadable + failures)
    failures_path = sibling(output, ".failures.tsv") if output else None
    table, stats = store.finish(n_chunks, failures_path, unreadable)
    return ExtractResult(
        output=output,
        table=table,
        num_images=n,
        num_written=stats["written"],
        num_failed=len(stats["failures"]),
        num_resized=stats["resized"],
        num_resumed=resumed,
        failures=stats["failures"],
        failures_path=stats["failures_path"],
        batch_mode=fm.batch_mode,
        batch_choice=fm.batch_choice,
        batch_timings=list(fm.timings),
        providers=fm.providers,
        preprocessing=spec,
        seconds=time.perf_counter() - t0,
        warnings=list(ds.warnings),
        source=ds.source,
    )


def _worth_tuning(tune: bool | str, fm: FaceModel, x: np.ndarray, images: int) -> bool:
    """Whether to time the model's configurations on the batch ``x`` (see extract)."""
    if tune != "auto":
        return bool(tune)
    return images >= 20 * 2 * len(fm.configurations(len(x))) * len(x)


def _chunk_table(ds: FaceDataset, pieces: list, schema: pa.Schema) -> pa.Table:
    idx = np.concatenate([p[0] for p in pieces])
    labels = ds.labels[idx]
    table = embedding_table(
        ds.paths.take(pa.array(idx)).to_pylist(),
        labels,
        [ds.identities[k] for k in labels],
        np.concatenate([p[1] for p in pieces]).astype(np.float32),
        np.concatenate([p[2] for p in pieces]),
        schema,
    )
    failures = [(ds.path(i), int(ds.labels[i]), msg) for p in pieces for i, msg in p[3]]
    part_meta = {"failures": failures, "resized": int(sum(p[4] for p in pieces))}
    return table.replace_schema_metadata(
        {**schema.metadata, PART_KEY: json.dumps(part_meta).encode()}
    )
