"""`faceclean extract`."""

from __future__ import annotations

import os
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from faceclean.cli.common import _triple, console, main
from faceclean.data.preprocess import FITS, PRESETS


@main.command()
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
@click.option(
    "--preset",
    type=click.Choice(sorted(PRESETS)),
    help="Preprocessing preset: insightface (RGB, (x-127.5)/127.5), facexzoo "
    "(BGR, (x-127.5)/128), imagenet (RGB, ImageNet mean/std).",
)
@click.option("--mean", callback=_triple, help="Per-channel mean in 0-255 pixel units, 'a,b,c'.")
@click.option("--std", callback=_triple, help="Per-channel std in 0-255 pixel units, 'a,b,c'.")
@click.option(
    "--rgb/--bgr",
    "rgb",
    default=None,
    help="Channel order the model takes [default: preset's, else RGB].",
)
@click.option(
    "--fit",
    type=click.Choice(FITS),
    help="Images not at the model's size: resize, or pad/centre-crop [default: resize].",
)
@click.option("--flip", is_flag=True, help="Flip test-time augmentation (image + mirror).")
@click.option("--batch-size", default=64, show_default=True, help="Images per model call.")
@click.option(
    "--workers",
    default=min(4, os.cpu_count() or 1),
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
    show_default=True,
    help="Images per resumable chunk and Parquet row group.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
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
    overwrite,
    quiet,
):
    """Embed the face images in DATA with an ONNX model, into a Parquet store.

    DATA is an image folder (root/<identity>/<image>), a list file of 'path label' lines,
    or an InsightFace train.rec (with train.idx beside it). Images that cannot be decoded
    are skipped and listed in <output>.failures.tsv. A killed run resumes when the same
    command is run again.
    """
    from faceclean.data.extraction import extract as run_extract

    result = run_extract(
        data,
        model,
        output,
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
        progress=not quiet,
    )
    if quiet:
        return
    for w in result.warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)
    spec = result.preprocessing
    table = Table(title="faceclean extract", show_header=False)
    rows = [
        ("output", str(result.output)),
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
        ("providers", ", ".join(result.providers)),
        ("time", f"{result.seconds:.1f} s, {result.images_per_second:,.1f} images/s"),
    ]
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)
