"""`faceclean align`: raw photos -> aligned face crops and a record of each photo."""

from __future__ import annotations

import os
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from faceclean.cli.common import Finite, console, main, record_summary
from faceclean.data.preprocess import PRESETS


@main.command("align")
@click.argument("data", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder for the aligned crops (same layout as DATA), or a .rec to pack them in.",
)
@click.option(
    "--detector",
    required=True,
    type=click.Path(path_type=Path),
    help="ONNX five-landmark face detector: YuNet or SCRFD.",
)
@click.option(
    "--root",
    type=click.Path(path_type=Path),
    help="Folder the paths of a list file are relative to [default: its folder].",
)
@click.option(
    "--pick",
    type=click.Choice(["largest", "central", "identity", "all"]),
    default="largest",
    show_default=True,
    help="Several faces in a photo: the largest, the most central, the one most like the "
    "other photos of its label (needs --embedder), or all (_1, _2 suffixes).",
)
@click.option(
    "--embedder",
    type=click.Path(path_type=Path),
    help="ONNX face model that --pick identity compares faces with (and --preset for its "
    "preprocessing unless the model records it).",
)
@click.option(
    "--preset",
    type=click.Choice(sorted(PRESETS)),
    help="The --embedder's preprocessing preset (as for extract).",
)
@click.option(
    "--min-size",
    type=Finite(0, None),
    default=0.0,
    show_default=True,
    help="Smallest face box side, px.",
)
@click.option(
    "--min-score",
    type=Finite(0, 1),
    default=0.6,
    show_default=True,
    help="Score floor of a kept face (a photo with only weaker detections says so in its record).",
)
@click.option(
    "--check/--no-check",
    default=True,
    show_default=True,
    help="Keep only faces whose landmarks have a face's geometry (eyes above nose above "
    "mouth, plausible proportions), so hands, cloth and the like are not kept.",
)
@click.option(
    "--rotate/--no-rotate",
    default=True,
    show_default=True,
    help="Look again at photos with no face turned by 90, 180 and 270 degrees.",
)
@click.option(
    "--size",
    type=click.IntRange(16, 4096),
    default=112,
    show_default=True,
    help="Side of the square crop, px.",
)
@click.option(
    "--refine/--no-refine",
    default=True,
    show_default=True,
    help="Find the landmarks again on the face warped upright and on its mirror image "
    "(more accurate, most on tilted faces; two more small detector calls a face).",
)
@click.option(
    "--max-side",
    type=click.IntRange(32, 16384),
    default=640,
    show_default=True,
    help="Photos are shrunk to this longer side for detection (crops use full resolution).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    default=min(4, os.cpu_count() or 1),
    show_default=True,
    help="Images processed at once.",
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
def align_cmd(
    data,
    output,
    detector,
    root,
    pick,
    embedder,
    preset,
    min_size,
    min_score,
    check,
    rotate,
    size,
    refine,
    max_side,
    workers,
    device,
    quiet,
):
    """Detect faces in DATA and warp each to the ArcFace 112x112 five-point template.

    DATA is an image folder, a 'path label' list file or a .rec. What happened to each
    photo (faces found, the one kept: box, score, landmarks; the rotation used; the reason
    when none) is written to <output>.align.parquet; photos with no face kept are also
    listed in <output>.failures.tsv. A killed run resumes when run again.
    """
    from faceclean.data.align import align

    if embedder is not None and pick != "identity":
        raise click.UsageError("--embedder is only used with --pick identity")
    if preset is not None and pick != "identity":
        raise click.UsageError("--preset is only used with --pick identity (for --embedder)")

    r = align(
        data,
        output,
        detector,
        root=root,
        pick=pick,
        embedder=embedder,
        preset=preset,
        min_size=min_size,
        min_score=min_score,
        check=check,
        rotate=rotate,
        refine=refine,
        size=size,
        max_side=max_side,
        workers=workers,
        device=device,
        progress=not quiet,
    )
    record_summary(
        "faceclean align",
        {
            "output": str(r.output),
            "list": str(r.list_path) if r.list_path else None,
            "images": r.num_images,
            "resumed": r.num_resumed,
            "faces_written": r.num_faces,
            "failed": r.num_failed,
            "failures": str(r.failures_path) if r.failures_path else None,
            "not_plausible": r.num_rejected,
            "turned": r.num_rotated,
            "record": str(r.records_path),
            "detector": r.detector,
            "providers": list(r.providers),
            "seconds": r.seconds,
            "images_per_second": r.images_per_second,
            "warnings": list(r.warnings),
        },
    )
    if quiet:
        return
    for w in r.warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)
    table = Table(title="faceclean align", show_header=False)
    rows = [
        ("output", str(r.output) + (f"  (list {r.list_path})" if r.list_path else "")),
        ("images", f"{r.num_images:,} ({r.num_resumed:,} from an earlier run)"),
        ("faces written", f"{r.num_faces:,}"),
        (
            "no face / failed",
            f"{r.num_failed:,}" + (f"  -> {r.failures_path}" if r.failures_path else ""),
        ),
        ("not plausible", f"{r.num_rejected:,} photos whose detections all failed the checks"),
        ("turned", f"{r.num_rotated:,} photos whose face was found turned 90/180/270 deg"),
        ("record", str(r.records_path)),
        ("detector", f"{r.detector} on {', '.join(r.providers)}"),
        ("time", f"{r.seconds:.1f} s, {r.images_per_second:,.1f} images/s"),
    ]
    if pick == "identity":
        rows.insert(3, ("chosen by identity", f"{r.num_chosen:,} photos with several faces"))
    if r.residuals:
        rows.append(("landmark fit", f"median RMS {r.median_residual:.2f} px on the template"))
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)
