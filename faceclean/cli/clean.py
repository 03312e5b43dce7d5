"""`faceclean filter`, `merge`, `clean`, `report`, `overlap` (inject-noise and
evaluate-cleaning: :mod:`faceclean.cli.noise`)."""

from __future__ import annotations

from pathlib import Path

import click

from faceclean.cli.common import (
    _backend,
    _batch_rows,
    _check_tau_inter,
    _device,
    _force,
    _loo,
    _max_group,
    _overwrite,
    _ray_address,
    _summary_table,
    _warn,
    _write_pairs,
    main,
)
from faceclean.cli.threshold_options import (
    NumberOrAuto,
    floor_options,
    resolve_floors,
    resolve_link_ratio,
    tau_inter_option,
    tau_intra_option,
)
from faceclean.data.store import sibling
from faceclean.errors import FacecleanError
from faceclean.outputs import writing


@main.command("filter")
@click.argument("embeddings", nargs=-1, required=True, type=click.Path(path_type=Path))
@tau_intra_option()
@floor_options
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
@_overwrite
@_ray_address
def filter_cmd(
    embeddings,
    tau_intra,
    min_cos_pos,
    min_norm,
    output,
    loo_below,
    device,
    backend,
    batch_rows,
    overwrite,
    ray_address,
):
    """Score each sample: D = cos(own centroid) / cos(hardest negative centroid).

    EMBEDDINGS is one embedding store or several shards of one (same dimension, labels).

    Writes path, label, identity, cos_pos, hardest_negative, cos_neg, discriminability and
    keep (D >= tau_intra and above the floors; singletons are kept with D = NaN).
    """
    from faceclean.cleaning.filter import filter_store

    min_cos_pos, min_norm = resolve_floors(tau_intra, min_cos_pos, min_norm)
    r = filter_store(
        embeddings,
        tau_intra,
        output,
        min_cos_pos=min_cos_pos,
        min_norm=min_norm,
        loo_below=loo_below,
        batch_rows=batch_rows,
        device=device,
        backend=backend,
        overwrite=overwrite,
        progress=True,
        ray_address=ray_address,
    )
    if r.num_kept == 0:  # the scores are complete, but nothing passes: say so loudly
        _warn(
            f"{r.what_drops_all(r.thresholds.tau_intra)[0]} drops every sample (the largest "
            f"D is {r.max_discriminability:.3g}): a clean at this threshold would be empty"
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
            **r.thresholds.summary(),
        },
    )


@main.command("merge")
@click.argument("embeddings", nargs=-1, required=True, type=click.Path(path_type=Path))
@tau_inter_option
@click.option(
    "--tau-intra",
    type=NumberOrAuto(),
    default=None,
    help="Filter first (a number or auto) and merge the centroids of the kept samples only.",
)
@_max_group
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
@_force
@_overwrite
@_ray_address
def merge_cmd(
    embeddings,
    tau_inter,
    min_link_ratio,
    tau_intra,
    max_group_size,
    output,
    loo_below,
    device,
    batch_rows,
    force,
    overwrite,
    ray_address,
):
    """Group classes that are one identity (union-find over centroid links)."""
    import numpy as np

    from faceclean.cleaning.filter import filter_store
    from faceclean.cleaning.merge import merge_classes
    from faceclean.cleaning.merge_auto import identity_groups, resolve_merge_thresholds
    from faceclean.cleaning.ray_clean import ray_session, stores_for

    if tau_inter != "auto":
        _check_tau_inter(tau_inter, force)
    min_link_ratio = resolve_link_ratio(tau_inter, min_link_ratio)
    pairs_path = sibling(output, ".pairs.parquet")
    with (
        writing(output, overwrite=overwrite, inputs=embeddings, companions=[pairs_path]),
        ray_session(ray_address),
    ):
        if tau_intra is None:
            sums, counts = stores_for(embeddings, batch_rows, ray_address).class_sums()
            if not counts.sum():  # an empty merge table would pass for "nothing to merge"
                raise FacecleanError(
                    "has no rows: there are no classes to merge", Path(embeddings[0])
                )
            keep = np.ones(int(counts.sum()), bool)
        else:
            groups = None  # see faceclean.cleaning.merge_auto.identity_groups
            if tau_intra == "auto":
                groups = identity_groups(
                    embeddings,
                    tau_inter,
                    min_link_ratio,
                    None,
                    batch_rows,
                    device,
                    ray_address=ray_address,
                )
            fr = filter_store(
                embeddings,
                tau_intra,
                None,
                same_identity=groups,
                loo_below=loo_below,
                batch_rows=batch_rows,
                device=device,
                keep_class_sums=False,  # only the kept sums are merged
                ray_address=ray_address,
            )
            fr.require_kept(fr.thresholds.tau_intra)
            sums, counts = fr.kept_sums, fr.kept_counts
            keep = fr.scores["keep"].to_numpy(zero_copy_only=False)
        tau_inter, min_link_ratio, why = resolve_merge_thresholds(
            embeddings, keep, len(counts), tau_inter, min_link_ratio, batch_rows
        )
        mr = merge_classes(sums, counts, tau_inter, max_group_size, device, min_link_ratio)
        _write_pairs([(mr.table, output), (mr.pairs, pairs_path)])
    _warn(mr.warning)
    _summary_table(
        "faceclean merge",
        {
            "output": str(output),
            "pairs": str(pairs_path),
            "links": mr.pairs.num_rows,
            "merged groups": len(mr.groups),
            "groups split by guard": mr.num_split_groups,
            "largest group": len(mr.groups[0]) if mr.groups else 1,
            "tau_inter": tau_inter,
            **({"tau_inter_auto": why} if why else {}),
            "min_link_ratio": min_link_ratio,
            "links refused by the look-alike guard": mr.num_guarded,
        },
    )


@main.command("clean")
@click.argument("embeddings", nargs=-1, required=True, type=click.Path(path_type=Path))
@tau_intra_option()
@floor_options
@tau_inter_option
@_max_group
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
@_force
@_overwrite
@click.option(
    "--exclude",
    type=click.Path(path_type=Path),
    help="Drop these classes first: a `faceclean overlap` folder or a file of labels.",
)
@click.option(
    "--dedup",
    type=click.FloatRange(-1, 1),
    default=None,
    help="List near-duplicate images (cosine above this, e.g. 0.98) in dedup.parquet; "
    "below 0.8 needs --force (that links different photos of one person).",
)
@click.option(
    "--dedup-keep",
    is_flag=True,
    help="With --dedup, keep one image per class of each duplicate group.",
)
@click.option(
    "--review",
    type=click.Path(path_type=Path),
    help="Apply a person's decisions (review.parquet of `faceclean review`) over the "
    "thresholds; files it names that this clean lacks are reported.",
)
@_ray_address
def clean_cmd(
    embeddings,
    tau_intra,
    min_cos_pos,
    min_norm,
    tau_inter,
    min_link_ratio,
    max_group_size,
    fmt,
    data,
    output,
    loo_below,
    device,
    backend,
    batch_rows,
    force,
    overwrite,
    exclude,
    dedup,
    dedup_keep,
    review,
    ray_address,
):
    """Filter, merge and write the clean list that `faceclean train` reads.

    The output folder is built aside and swapped in whole when complete."""
    from faceclean.cleaning.clean import clean

    _check_dedup(dedup, dedup_keep, force)
    if tau_inter != "auto":
        _check_tau_inter(tau_inter, force)
    min_link_ratio = resolve_link_ratio(tau_inter, min_link_ratio)
    min_cos_pos, min_norm = resolve_floors(tau_intra, min_cos_pos, min_norm)
    r = clean(
        embeddings,
        output,
        tau_intra,
        tau_inter,
        min_link_ratio=min_link_ratio,
        min_cos_pos=min_cos_pos,
        min_norm=min_norm,
        fmt=fmt,
        max_group_size=max_group_size,
        loo_below=loo_below,
        data_root=data,
        device=device,
        batch_rows=batch_rows,
        backend=backend,
        overwrite=overwrite,
        exclude=exclude,
        dedup=dedup,
        dedup_keep=dedup_keep,
        review=review,
        progress=True,  # a line at a steady interval in a log, as align and extract print
        ray_address=ray_address,
    )
    _warn(r.merge.warning)
    if r.summary.get("review_missing_files"):
        _warn(
            f"{r.summary['review_missing_files']} reviewed file(s) are not in this clean, e.g. "
            + ", ".join(r.summary["review_missing_examples"][:3])
        )
    hide = ("largest_groups", "warning", "review_missing_examples")
    s = {k: v for k, v in r.summary.items() if k not in hide}
    s["clean list"] = str(r.outputs["clean"])
    _summary_table("faceclean clean", s)


# Same-person photos of common face models have cosines around 0.6; a near-duplicate
# threshold below this is almost certainly a typo and --dedup-keep would then drop most of
# the set.
_DEDUP_FLOOR = 0.8


def _check_dedup(dedup: float | None, dedup_keep: bool, force: bool) -> None:
    if dedup_keep and dedup is None:
        raise click.UsageError("--dedup-keep needs --dedup TAU (the near-duplicate cosine)")
    if dedup is not None and dedup < _DEDUP_FLOOR and not force:
        raise click.BadParameter(
            f"{dedup} would group different photos of one person as duplicates (near-"
            f"duplicates are above ~0.95); pass --force if you mean a value below {_DEDUP_FLOOR}",
            param_hint="'--dedup'",
        )


@main.command("report")
@click.argument("clean_dir", type=click.Path(path_type=Path))
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    help="Image root for the contact sheet [default: the one the embeddings record].",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Report folder [default: CLEAN_DIR/report].",
)
@_overwrite
def report_cmd(clean_dir, data, output, overwrite):
    """Write report.html: D histogram, drops per class, merged groups, contact sheet."""
    from faceclean.cleaning.report import write_report

    out = write_report(clean_dir, data, output, overwrite)
    _summary_table("faceclean report", {k: str(v) for k, v in out.items()})


@main.command("overlap")
@click.argument("train", type=click.Path(path_type=Path))
@click.argument("evaluation", metavar="EVAL", type=click.Path(path_type=Path))
@click.option(
    "--tau",
    type=click.FloatRange(-1, 1),
    default=0.62,
    show_default=True,
    help="Centroid cosine above which a training and an evaluation class are one identity.",
)
@click.option(
    "--image-tau",
    type=click.FloatRange(-1, 1),
    default=None,
    help="Also list image pairs across the stores above this cosine (e.g. 0.95).",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="Output folder: identity_pairs, exclude, image_pairs (Parquet), summary.json.",
)
@_device
@_backend
@_overwrite
def overlap_cmd(train, evaluation, tau, image_tau, output, device, backend, overwrite):
    """Training identities that are evaluation identities (and shared images).

    Writes the pairs with their cosines and exclude.parquet, the training classes to drop
    with `faceclean clean --exclude OUTPUT`.
    """
    from faceclean.cleaning.overlap import find_overlap, write_overlap

    r = find_overlap(train, evaluation, tau, image_tau, device, backend)
    write_overlap(r, output, overwrite)
    _summary_table("faceclean overlap", {"output": str(output), **r.summary})
