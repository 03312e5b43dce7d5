"""`faceclean filter`, `merge`, `clean`, `report`, `inject-noise`, `evaluate-cleaning`."""

from __future__ import annotations

from pathlib import Path

import click

from faceclean.cli.common import (
    _backend,
    _batch_rows,
    _device,
    _loo,
    _summary_table,
    main,
)
from faceclean.data.store import sibling, write_tables


@main.command("filter")
@click.argument("embeddings", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--tau-intra",
    default=0.3,
    show_default=True,
    help="Drop samples whose discriminability D is below this (paper: 0.3).",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="Per-sample scores table (Parquet).",
)
@_loo
@_device
@_backend
@_batch_rows
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
def filter_cmd(embeddings, tau_intra, output, loo_below, device, backend, batch_rows, overwrite):
    """Score each sample: D = cos(own centroid) / cos(hardest negative centroid).

    EMBEDDINGS is one embedding store or several shards of one (same dimension, labels).

    Writes path, label, identity, cos_pos, hardest_negative, cos_neg, discriminability and
    keep (D >= tau_intra; singletons are kept with D = NaN).
    """
    from faceclean.cleaning.filter import filter_store

    r = filter_store(
        embeddings,
        tau_intra,
        output,
        loo_below=loo_below,
        batch_rows=batch_rows,
        device=device,
        backend=backend,
        overwrite=overwrite,
    )
    _summary_table(
        "faceclean filter",
        {
            "output": str(output),
            "samples": r.num_samples,
            "kept": r.num_kept,
            "dropped": r.num_samples - r.num_kept,
            "classes": r.num_classes,
            "classes emptied": r.num_emptied,
            "singleton classes": r.num_singletons,
            "search backend": r.device,
        },
    )


@main.command("merge")
@click.argument("embeddings", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--tau-inter",
    default=0.62,
    show_default=True,
    help="Merge classes whose centroid cosine exceeds this (paper: 0.62).",
)
@click.option(
    "--tau-intra",
    type=float,
    default=None,
    help="Filter first and merge the centroids of the kept samples only.",
)
@click.option(
    "--max-group-size",
    default=0,
    show_default=True,
    help="Chain guard: split bigger groups by cutting their weakest links (0: off).",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="Merge table (Parquet); the pairs go to <output>.pairs.parquet.",
)
@_loo
@_device
@_batch_rows
def merge_cmd(
    embeddings, tau_inter, tau_intra, max_group_size, output, loo_below, device, batch_rows
):
    """Group classes that are one identity (union-find over centroid links)."""
    from faceclean.cleaning.filter import class_sums, filter_store
    from faceclean.cleaning.merge import merge_classes

    if tau_intra is None:
        sums, counts = class_sums(embeddings, batch_rows)
    else:
        fr = filter_store(
            embeddings, tau_intra, None, loo_below=loo_below, batch_rows=batch_rows, device=device
        )
        sums, counts = fr.kept_sums, fr.kept_counts
    mr = merge_classes(sums, counts, tau_inter, max_group_size, device)
    pairs_path = sibling(output, ".pairs.parquet")
    write_tables((mr.table, output), (mr.pairs, pairs_path))
    _summary_table(
        "faceclean merge",
        {
            "output": str(output),
            "pairs": str(pairs_path),
            "links": mr.pairs.num_rows,
            "merged groups": len(mr.groups),
            "groups split by guard": mr.num_split_groups,
            "largest group": len(mr.groups[0]) if mr.groups else 1,
        },
    )


@main.command("clean")
@click.argument("embeddings", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--tau-intra", default=0.3, show_default=True, help="Filter threshold on D.")
@click.option("--tau-inter", default=0.62, show_default=True, help="Merge threshold.")
@click.option("--max-group-size", default=0, show_default=True, help="Chain guard (0: off).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["parquet", "lst", "rec"]),
    default="parquet",
    show_default=True,
    help="Format of the clean list.",
)
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    help="Image root for --format rec [default: the one the embeddings record].",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="Output folder: scores, merges, pairs, clean list, summary.json.",
)
@_loo
@_device
@_backend
@_batch_rows
def clean_cmd(
    embeddings,
    tau_intra,
    tau_inter,
    max_group_size,
    fmt,
    data,
    output,
    loo_below,
    device,
    backend,
    batch_rows,
):
    """Filter, merge and write the clean list that `faceclean train` reads."""
    from faceclean.cleaning.clean import clean

    r = clean(
        embeddings,
        output,
        tau_intra,
        tau_inter,
        fmt=fmt,
        max_group_size=max_group_size,
        loo_below=loo_below,
        data_root=data,
        device=device,
        batch_rows=batch_rows,
        backend=backend,
    )
    s = {k: v for k, v in r.summary.items() if k != "largest_groups"}
    s["clean list"] = str(r.outputs["clean"])
    _summary_table("faceclean clean", s)


@main.command("report")
@click.argument("clean_dir", type=click.Path(path_type=Path))
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    help="Image root for the contact sheet [default: the one the embeddings record].",
)
def report_cmd(clean_dir, data):
    """Write report.html: D histogram, drops per class, merged groups, contact sheet."""
    from faceclean.cleaning.report import write_report

    out = write_report(clean_dir, data)
    _summary_table("faceclean report", {k: str(v) for k, v in out.items()})


@main.command("inject-noise")
@click.argument("embeddings", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="Noisy store; the truth goes to <output>.truth.parquet.",
)
@click.option("--flip", default=0.05, show_default=True, help="Fraction of samples relabelled.")
@click.option(
    "--outlier",
    default=0.05,
    show_default=True,
    help="Fraction of identities held out and filed under others.",
)
@click.option(
    "--split", default=0.05, show_default=True, help="Fraction of identities split over two labels."
)
@click.option("--seed", default=0, show_default=True)
def inject_noise_cmd(embeddings, output, flip, outlier, split, seed):
    """Corrupt a clean embedding store with known noise (in memory)."""
    from faceclean.cleaning.noise import inject_noise
    from faceclean.data.store import open_store

    ns = inject_noise(open_store(embeddings).read(), flip, outlier, split, seed)
    truth = sibling(output, ".truth.parquet")
    write_tables((ns.table, output), (ns.truth, truth))
    counts = ns.truth["noise"].value_counts().to_pylist()
    _summary_table(
        "faceclean inject-noise",
        {"output": str(output), "truth": str(truth), **{c["values"]: c["counts"] for c in counts}},
    )


@main.command("evaluate-cleaning")
@click.argument("clean_dir", type=click.Path(path_type=Path))
@click.option(
    "--truth",
    required=True,
    type=click.Path(path_type=Path),
    help="Truth table written by inject-noise.",
)
@click.option(
    "--sweep",
    is_flag=True,
    help="Also sweep tau_intra and tau_inter; writes sweep.csv and sweep.png.",
)
def evaluate_cleaning_cmd(clean_dir, truth, sweep):
    """Precision/recall of a `faceclean clean` output against injected noise."""
    from faceclean.cleaning.evaluate import evaluate_clean_dir

    result = evaluate_clean_dir(clean_dir, truth, do_sweep=sweep)
    _summary_table(
        "faceclean evaluate-cleaning",
        {k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in result.items()},
    )
