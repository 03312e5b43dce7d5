"""`faceclean extract`."""

from __future__ import annotations

import math
import os
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from faceclean.cli.common import (
    OneLineUsage,
    _summary_table,
    _triple,
    console,
    main,
    record_summary,
)
from faceclean.data.listfile import FORMATS as LIST_FORMATS
from faceclean.data.preprocess import FITS, PRESETS


def _mean(ctx, param, value):
    parts = _triple(ctx, param, value)
    if parts is not None and not all(math.isfinite(v) and -1e4 <= v <= 1e4 for v in parts):
        raise click.BadParameter("mean values must be finite numbers within +-10000")
    return parts


def _std(ctx, param, value):
    parts = _triple(ctx, param, value)
    if parts is not None and not all(math.isfinite(v) and 0 < v <= 1e4 for v in parts):
        raise click.BadParameter("std values must be positive (and at most 10000)")
    return parts


_PREPROCESSING = [
    click.option(
        "--preset",
        type=click.Choice(sorted(PRESETS)),
        help="Preprocessing preset: insightface (RGB, (x-127.5)/127.5), facexzoo "
        "(BGR, (x-127.5)/128), imagenet (RGB, ImageNet mean/std).",
    ),
    click.option("--mean", callback=_mean, help="Per-channel mean in 0-255 pixel units, 'a,b,c'."),
    click.option("--std", callback=_std, help="Per-channel std in 0-255 units, 'a,b,c' (> 0)."),
    click.option(
        "--rgb/--bgr",
        "rgb",
        default=None,
        help="Channel order the model takes [default: preset's, else RGB].",
    ),
    click.option(
        "--fit",
        type=click.Choice(FITS),
        help="Images not at the model's size: resize, or pad/centre-crop [default: resize].",
    ),
]


def preprocessing_options(f):
    """extract's preprocessing options (also on ``faceclean eval MODEL.onnx``)."""
    for option in reversed(_PREPROCESSING):
        f = option(f)
    return f


@main.command(cls=OneLineUsage)
@click.argument("data", type=click.Path(path_type=Path))
@click.option(
    "-m",
    "--model",
    required=True,
    type=click.Path(path_type=Path),
    help="ONNX face model: one input [N,3,H,W], one output [N,dim].",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="Embedding store to write (Parquet).",
)
@click.option(
    "--root",
    type=click.Path(path_type=Path),
    help="Folder the paths of a list file are relative to [default: its folder].",
)
@preprocessing_options
@click.option("--flip", is_flag=True, help="Flip test-time augmentation (image + mirror).")
@click.option(
    "--batch-size",
    default=64,
    type=click.IntRange(1, 65536),
    show_default=True,
    help="Images per model call.",
)
@click.option(
    "--workers",
    default=min(4, os.cpu_count() or 1),
    type=click.IntRange(1, 256),
    show_default=True,
    help="Image-decoding threads.",
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="auto uses CUDA when onnxruntime has it.",
)
@click.option(
    "--dtype",
    type=click.Choice(["float32", "float16"]),
    default="float32",
    show_default=True,
    help="Storage type of the embeddings.",
)
@click.option(
    "--chunk-size",
    default=8192,
    type=click.IntRange(1, 1 << 24),
    show_default=True,
    help="Images per resumable chunk and Parquet row group.",
)
@click.option(
    "--max-failures",
    default=0.5,
    type=click.FloatRange(0, 1),
    show_default=True,
    help="Share of images that may fail to decode before extract is an error (exit 2, no "
    "output); every image failing is always an error.",
)
@click.option(
    "--format",
    "list_format",
    type=click.Choice(["auto", *LIST_FORMATS]),
    default="auto",
    show_default=True,
    help="Layout of a list file: plain 'path label', insightface 'aligned<TAB>path<TAB>label', "
    "im2rec 'index<TAB>label<TAB>path'; auto detects it from the lines.",
)
@click.option(
    "--model-output",
    metavar="NAME",
    help="The model output holding the embedding, when the model has several.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@click.option(
    "--shard",
    help="I/N: only slice I (0-based) of N, labels of the whole dataset; all/N: every slice "
    "into <output stem>.shard-IIIII-of-NNNNN.parquet (five digits: emb.parquet, all/4 -> "
    "emb.shard-00000-of-00004.parquet ...).",
)
@click.option(
    "--ray-address",
    help="With --shard all/N: run the shards as Ray tasks ('local' starts one here).",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
def extract(
    data,
    model,
    output,
    root,
    preset,
    mean,
    std,
    rgb,
    fit,
    flip,
    batch_size,
    workers,
    device,
    dtype,
    chunk_size,
    max_failures,
    list_format,
    model_output,
    overwrite,
    shard,
    ray_address,
    quiet,
):
    """Embed the face images in DATA with an ONNX model, into a Parquet store.

    DATA is an image folder (root/<identity>/<image>), a list file ('path label',
    InsightFace 'aligned<TAB>path<TAB>label' or im2rec 'index<TAB>label<TAB>path' lines),
    or a .rec (InsightFace or im2rec layout; without its .idx it is indexed by a scan).
    Images that cannot be decoded are skipped and listed in <output>.failures.tsv; more
    than --max-failures of them is an error. A killed run resumes when the same command is
    run again.
    """
    from faceclean.data.extraction import extract as run_extract
    from faceclean.data.sharding import extract_shards, parse_shard

    shard = parse_shard(shard) if shard else None
    if ray_address and (shard is None or shard[0] is not None):
        raise click.UsageError("--ray-address needs --shard all/N")
    kwargs = dict(
        root=root,
        preset=preset,
        mean=mean,
        std=std,
        channels=None if rgb is None else ("RGB" if rgb else "BGR"),
        fit=fit,
        flip=flip,
        batch_size=batch_size,
        workers=workers,
        device=device,
        dtype=dtype,
        chunk_size=chunk_size,
        overwrite=overwrite,
        max_failures=max_failures,
        list_format=list_format,
        output_name=model_output,
        progress=not quiet,
    )
    if shard is not None and shard[0] is None:
        done = extract_shards(run_extract, data, model, output, shard[1], ray_address, **kwargs)
        if not quiet:
            _summary_table(
                "faceclean extract (shards)",
                {
                    s["output"]: f"{s['written']:,} written, {s['failed']:,} failed, "
                    f"{s['seconds']:.1f} s on {s['providers'][0]}"
                    for s in done
                },
            )
        return
    result = run_extract(data, model, output, shard=shard, **kwargs)
    record_summary(
        "faceclean extract",
        {
            "output": str(result.output),
            "input": result.source,
            "images": result.num_images,
            "resumed": result.num_resumed,
            "written": result.num_written,
            "failed": result.num_failed,
            "failures": str(result.failures_path) if result.failures_path else None,
            "batching": result.batch_mode,
            "providers": list(result.providers),
            "seconds": result.seconds,
            "images_per_second": result.images_per_second,
            "warnings": list(result.warnings),
        },
    )
    if quiet:
        return
    for w in result.warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)
    spec = result.preprocessing
    table = Table(title="faceclean extract", show_header=False)
    rows = [
        ("output", str(result.output)),
        ("input", result.source),
        ("images", f"{result.num_images:,} ({result.num_resumed:,} from an earlier run)"),
        ("written", f"{result.num_written:,}"),
        (
            "failed",
            f"{result.num_failed:,}"
            + (f"  -> {result.failures_path}" if result.failures_path else ""),
        ),
        ("resized/padded", f"{result.num_resized:,} to {spec.width}x{spec.height} ({spec.fit})"),
        (
            "preprocessing",
            f"{spec.channels}, mean {spec.mean}, std {spec.std}" + (", flip TTA" if flip else ""),
        ),
        ("batching", result.batch_mode),
        ("model run", _batch_choice(result)),
        ("providers", ", ".join(result.providers)),
        ("time", f"{result.seconds:.1f} s, {result.images_per_second:,.1f} images/s"),
    ]
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)


def _batch_choice(result) -> str:
    """The configuration extract chose and its margin over the runner-up."""
    t = result.batch_timings
    if not result.batch_choice or len(t) < 2:
        return result.batch_choice or "-"
    return f"{result.batch_choice} (fastest: {t[0][1]:.0f} img/s; next {t[1][0]}: {t[1][1]:.0f})"
