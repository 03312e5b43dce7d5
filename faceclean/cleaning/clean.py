"""`faceclean clean`: filter then merge, and write the clean list training reads.

Outputs, in one folder built in a temporary sibling and swapped in whole when complete (a
failed or killed re-run leaves the previous folder as it was; see :mod:`faceclean.outputs`):
``scores.parquet`` (per sample, see :mod:`.filter`), ``merges.parquet`` (``label``,
``merged_label``, ``group_size``), ``pairs.parquet`` (``label_a``, ``label_b``, ``cosine``,
``merged``), the clean list, and ``summary.json``.

The clean list holds the kept samples with ``path``, ``label`` (new, contiguous from 0, in
order of merged label), ``original_label`` and ``identity``: as Parquet, as ``path label``
lines (``--format lst``), or as a new InsightFace ``.rec``/``.idx`` (``--format rec``,
which reads the images again from the dataset the embeddings came from).

A threshold that drops every sample is an error naming the largest D seen: an empty clean
list is never written as if it were a result. ``--format lst`` cannot hold a path with a
tab, newline or carriage return: such a path is a named error (use Parquet).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from faceclean.cleaning.dedup import dedup_from_filter, restrict_inputs
from faceclean.cleaning.filter import FilterResult, filter_store
from faceclean.cleaning.merge import MergeResult, merge_classes
from faceclean.cleaning.merge_auto import identity_groups, resolve_merge_thresholds
from faceclean.cleaning.near_pairs import PairSearch
from faceclean.cleaning.ray_clean import ray_session
from faceclean.data.datasets import read_image_bytes
from faceclean.data.preprocess import ImageError
from faceclean.data.recimages import rec_image, write_property
from faceclean.data.recordio import write_face_rec
from faceclean.data.store import as_paths, atomic_path, iter_row_groups, read_metadata
from faceclean.errors import FacecleanError
from faceclean.outputs import writing

FORMATS = ("parquet", "lst", "rec")
CLEAN_FORMAT = 1  # summary.json "format": readers refuse a folder newer than they know


def new_labels(kept_counts: np.ndarray, merged_label: np.ndarray) -> np.ndarray:
    """Map every original label to its contiguous clean label, or -1 if nothing is kept."""
    alive = kept_counts > 0
    reps = np.unique(merged_label[alive])
    mapping = np.full(len(kept_counts), -1, np.int64)
    mapping[alive] = np.searchsorted(reps, merged_label[alive])
    return mapping


def _clean_batches(scores: pa.Table | Path, mapping: np.ndarray):
    batches = (
        scores.to_batches(65536)
        if isinstance(scores, pa.Table)
        else iter_row_groups(pq.ParquetFile(scores), ["path", "label", "identity", "keep"], 65536)
    )
    for batch in batches:
        kept = batch.filter(batch.column("keep"))
        original = kept.column("label").to_numpy()
        yield pa.table(
            {
                "path": kept.column("path"),
                "label": pa.array(mapping[original]),
                "original_label": pa.array(original),
                "identity": kept.column("identity"),
            }
        )


def write_clean_list(
    scores: pa.Table | Path,
    mapping: np.ndarray,
    output: Path,
    fmt: str = "parquet",
    data_root: Path | None = None,
    preprocessing: dict | None = None,
) -> int:
    """Write the kept samples with their clean labels; returns the number of rows.

    ``--format rec`` needs ``data_root`` (the images) and ``preprocessing`` (the
    extraction's, from the embeddings' metadata: the input size and fit); it writes the
    ``property`` file beside the ``.rec``."""
    if fmt not in FORMATS:
        raise FacecleanError(f"format must be one of {FORMATS}, not {fmt!r}")
    rows = 0
    if fmt == "parquet":
        with atomic_path(output) as tmp:
            writer = None
            for t in _clean_batches(scores, mapping):
                writer = writer or pq.ParquetWriter(tmp, t.schema)
                writer.write_table(t)
                rows += t.num_rows
            if writer is None:
                raise FacecleanError("no sample was kept; nothing to write", output)
            writer.close()
    elif fmt == "lst":
        with atomic_path(output) as tmp, open(tmp, "w") as f:
            for t in _clean_batches(scores, mapping):
                for p, lab in zip(t["path"].to_pylist(), t["label"].to_pylist(), strict=True):
                    if "\t" in p or "\n" in p or "\r" in p:
                        raise FacecleanError(
                            f"path {p!r} holds a tab or line break, which a 'path label' "
                            "list cannot hold; use --format parquet",
                            output,
                        )
                    f.write(f"{p}\t{lab}\n")
                rows += t.num_rows
    else:
        if data_root is None:
            raise FacecleanError("--format rec needs the images: pass --data ROOT", output)
        table = pa.concat_tables(list(_clean_batches(scores, mapping)))
        table = table.take(pc.sort_indices(table, [("label", "ascending")]))
        paths, labels = table["path"].to_pylist(), table["label"].to_numpy()

        # Training loaders decode records as they are: store images at the model's input
        # size, fitted as extract did (see faceclean.data.recimages).
        spec = preprocessing or {}
        if "height" not in spec:
            raise FacecleanError(
                "--format rec needs the model input size, recorded by `faceclean extract` in "
                "the embeddings' metadata; these embeddings have none",
                output,
            )
        h, w, fit = int(spec["height"]), int(spec["width"]), spec.get("fit", "resize")

        def items():
            for p, lab in zip(paths, labels, strict=True):
                try:
                    yield int(lab), rec_image(read_image_bytes(data_root, p), h, w, fit)[0]
                except (OSError, ImageError) as e:
                    raise FacecleanError(f"cannot read image for the .rec: {e}", p) from None

        rows = write_face_rec(output, items())
        write_property(output.parent, int(labels.max()) + 1 if len(labels) else 0, h, w)
    return rows


def read_clean_summary(clean_dir: Path) -> dict:
    """``summary.json`` of a `faceclean clean` folder; a clear error if it is not one."""
    path = Path(clean_dir) / "summary.json"
    if not path.is_file():
        raise FacecleanError("not a `faceclean clean` output (no summary.json)", clean_dir)
    try:
        summary = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise FacecleanError("not a `faceclean clean` summary (not JSON)", path) from None
    needed = ("embeddings", "tau_intra", "tau_inter", "samples")
    missing = [k for k in needed if k not in summary] if isinstance(summary, dict) else []
    if not isinstance(summary, dict) or missing:
        raise FacecleanError(
            f"not a `faceclean clean` summary (lacks {', '.join(missing) or 'its keys'})", path
        )
    return summary


@dataclass
class CleanResult:
    filter: FilterResult
    merge: MergeResult
    num_clean_rows: int
    num_clean_classes: int
    outputs: dict[str, Path]
    summary: dict


def clean(
    embeddings: str | Path | list,
    output_dir: str | Path,
    tau_intra: float | str = 0.3,
    tau_inter: float | str = 0.62,
    *,
    min_link_ratio: float | str | None = None,
    min_cos_pos: float | str | None = None,
    min_norm: float | str | None = None,
    fmt: str = "parquet",
    max_group_size: int = 0,
    loo_below: int | None = None,
    data_root: str | Path | None = None,
    device: str = "auto",
    batch_rows: int = 65536,
    backend: str = "auto",
    overwrite: bool = False,
    wait: float = 0.0,
    exclude: str | Path | None = None,
    dedup: float | None = None,
    dedup_keep: bool = False,
    review: str | Path | None = None,
    progress: bool = False,
    ray_address: str | None = None,
) -> CleanResult:
    """Filter (tau_intra), merge the kept classes (tau_inter), write every output.

    ``embeddings`` is one store or a list of shards (one label space, one dimension).
    ``tau_intra``, ``min_cos_pos`` and ``min_norm`` are the filter's (see
    :func:`.filter.filter_store`; ``"auto"`` chooses from the data and the summary says
    what and why). ``tau_inter`` and ``min_link_ratio`` (the look-alike guard) are the
    merge's; ``"auto"`` chooses them from split statistics of the kept samples (see
    :mod:`.merge_auto`).

    Merging uses centroids of the kept samples only, from the sums the filter pass
    already has, so the whole clean reads the embeddings twice (sums, then scores).

    ``output_dir`` must not exist unless ``overwrite``; it is checked and locked before
    any work, built aside and swapped in whole (see :mod:`faceclean.outputs`). ``wait``
    seconds are spent waiting for another process writing the same folder (0: refuse at
    once); a folder it completed meanwhile then counts as existing.

    ``exclude`` (a `faceclean overlap` folder or a label list) drops whole classes first;
    ``dedup`` (a cosine) lists near-duplicate groups in ``dedup.parquet`` and, with
    ``dedup_keep``, keeps one image per class of each (see :mod:`.dedup`).

    ``review`` (a ``review.parquet`` of `faceclean review`) applies a person's decisions
    over the thresholds and is carried into the output folder (see
    :mod:`faceclean.cleaning.review_apply`). An existing output holding a review is not replaced
    without one: that would lose the person's work.

    ``progress``: progress bars (lines in a log) on stderr for the passes over the rows.
    ``ray_address``: the filter's class sums and scoring (and the first pass of an auto
    threshold) run as Ray tasks on this cluster, one Ray session for the whole clean ("local"
    starts one here; see :mod:`.ray_clean`); the outputs are the same as in one process.
    """
    embeddings, out = as_paths(embeddings), Path(output_dir)
    if fmt not in FORMATS:
        raise FacecleanError(f"format must be one of {FORMATS}, not {fmt!r}")
    if data_root is None and fmt == "rec":
        data_root = read_metadata(embeddings[0]).get("dataset")
    inputs = [*embeddings, data_root]
    reviewed = _read_review(review, out, overwrite)
    with (
        writing(out, overwrite=overwrite, inputs=inputs, folder=True, wait=wait) as tmp,
        ray_session(ray_address),  # one for the whole clean
    ):
        given = embeddings
        # --dedup alone lists duplicates from the filter's own product (one pass for both);
        # --exclude / --dedup-keep: clean a copy without the dropped rows (deleted below).
        excluded, review_summary = _reviewed_exclude(reviewed, exclude, tmp)
        # The shared product holds similarities to the class centroids: not with rows
        # dropped first, nor with --tau-intra auto (its filter scores against identity
        # groups), nor on Ray (the product is on other machines); those take dedup's own
        # exact pass, in this process.
        alone = dedup is not None and not dedup_keep and excluded is None and tau_intra != "auto"
        alone = alone and not ray_address
        shared = PairSearch(dedup, tmp) if alone else None
        embeddings, restricted = restrict_inputs(
            given, tmp, excluded, None if shared else dedup, dedup_keep, device, backend, progress
        )
        if excluded != exclude:  # the review kept some classes: name the folder it read
            restricted["exclude"] = str(Path(exclude).resolve())
            Path(excluded).unlink()
        clean_name = {"parquet": "clean.parquet", "lst": "clean.lst", "rec": "train.rec"}[fmt]
        paths = {
            "scores": tmp / "scores.parquet",
            "merges": tmp / "merges.parquet",
            "pairs": tmp / "pairs.parquet",
            "clean": tmp / clean_name,
            "summary": tmp / "summary.json",
        }
        # With auto, D near 1 must not set a split identity's halves against each other.
        groups = None
        if tau_intra == "auto":
            first = tmp / "scores-first-pass.parquet"
            floors = {"min_cos_pos": min_cos_pos, "min_norm": min_norm, "backend": backend}
            floors["ray_address"] = ray_address
            groups = identity_groups(
                embeddings, tau_inter, min_link_ratio, first, batch_rows, device, **floors
            )
            first.unlink(missing_ok=True)
        fr = filter_store(
            embeddings,
            tau_intra,
            paths["scores"],
            same_identity=groups,
            min_cos_pos=min_cos_pos,
            min_norm=min_norm,
            loo_below=loo_below,
            batch_rows=batch_rows,
            device=device,
            backend=backend,
            on_block=shared.add_block if shared else None,
            progress=progress,
            # The merge needs only the kept sums: the class sums become them in place (one
            # K x d array less; dedup reads its centroids from them first).
            keep_class_sums=False,
            before_kept=(
                (lambda s, c: restricted.update(dedup_from_filter(given, shared, s, c, tmp)))
                if shared
                else None
            ),
            ray_address=ray_address,
        )
        tau_intra = fr.thresholds.tau_intra  # the value applied (chosen, with auto)
        fr.require_kept(tau_intra, embeddings[0] if len(embeddings) == 1 else None)
        keep = pq.read_table(paths["scores"], columns=["keep"])["keep"]
        tau_inter, min_link_ratio, merge_why = resolve_merge_thresholds(
            embeddings,
            keep.to_numpy(zero_copy_only=False),
            len(fr.kept_counts),
            tau_inter,
            min_link_ratio,
            batch_rows,
        )
        mr = merge_classes(
            fr.kept_sums, fr.kept_counts, tau_inter, max_group_size, device, min_link_ratio
        )
        kept_counts = fr.kept_counts
        if reviewed is not None:
            kept_counts, mr, applied = _apply_review(reviewed, review, paths, fr, mr, tmp)
            review_summary |= applied
        for key in ("merges", "pairs"):
            with atomic_path(paths[key]) as part:
                pq.write_table(mr.table if key == "merges" else mr.pairs, part)
        mapping = new_labels(kept_counts, mr.merged_label)
        rows = write_clean_list(
            paths["scores"],
            mapping,
            paths["clean"],
            fmt,
            Path(data_root) if data_root else None,
            read_metadata(given[0]).get("preprocessing") if fmt == "rec" else None,
        )
        if embeddings != given:
            embeddings[0].unlink()
        summary = {
            "format": CLEAN_FORMAT,
            "embeddings": [str(e) for e in given],
            # The image root training reads the list against (absolute since extract 0.2).
            "dataset": str(data_root or read_metadata(given[0]).get("dataset") or "") or None,
            **fr.thresholds.summary(),
            "tau_inter": tau_inter,
            **({"tau_inter_auto": merge_why} if merge_why else {}),
            "min_link_ratio": min_link_ratio,
            "links_refused_by_guard": mr.num_guarded,
            "max_group_size": max_group_size,
            "loo_below": loo_below,
            "samples": fr.num_samples,
            "kept": fr.num_kept,
            "dropped": fr.num_samples - fr.num_kept,
            "classes": fr.num_classes,
            "singleton_classes": fr.num_singletons,
            "classes_emptied_by_filter": fr.num_emptied,
            "merged_groups": len(mr.groups),
            "classes_in_merged_groups": mr.classes_in_groups,
            "merged_share": round(mr.merged_share, 4),
            "warning": mr.warning,
            "groups_split_by_guard": mr.num_split_groups,
            "largest_groups": mr.groups[:10],
            "clean_rows": rows,
            "clean_classes": int(mapping.max() + 1) if (mapping >= 0).any() else 0,
            "search_backend": fr.device,
            **restricted,
            **review_summary,
        }
        with atomic_path(paths["summary"]) as part:
            part.write_text(json.dumps(summary, indent=2))
        r = CleanResult(fr, mr, rows, summary["clean_classes"], paths, summary)
    r.outputs = {k: out / p.name for k, p in r.outputs.items()}
    return r


def _read_review(review, out: Path, overwrite: bool):
    """The review to apply, read before the output folder (which may hold it) is replaced."""
    if review is None:
        if overwrite and (out / "review.parquet").is_file():
            raise FacecleanError(
                "holds review.parquet, a person's review decisions: pass --review "
                f"{out / 'review.parquet'} to apply and keep them, or move the file away",
                out,
            )
        return None
    from faceclean.cleaning.review_apply import load_review

    return load_review(review)


def _reviewed_exclude(reviewed, exclude, tmp: Path):
    """``exclude`` less the overlap pairs a review split (see :mod:`.review_apply`)."""
    if reviewed is None:
        return exclude, {}
    from faceclean.cleaning.review_apply import reviewed_exclude

    return reviewed_exclude(reviewed[0], exclude, tmp)


def _apply_review(reviewed, review, paths: dict, fr: FilterResult, mr: MergeResult, tmp: Path):
    """Apply a review (see :mod:`faceclean.cleaning.review_apply`); copy it into the new folder."""
    from faceclean.cleaning.review_apply import apply_faces, apply_merges

    table, data = reviewed
    counts, summary = apply_faces(table, paths["scores"], len(fr.kept_counts))
    names = pq.read_table(paths["scores"], columns=["label", "identity"])
    names = dict(zip(names["identity"].to_pylist(), names["label"].to_pylist(), strict=True))
    mr, merge_summary = apply_merges(table, names, mr, np.flatnonzero(counts > 0))
    (tmp / "review.parquet").write_bytes(data)  # inside the folder swapped in whole
    return counts, mr, {"review": str(Path(review).resolve()), **summary, **merge_summary}
