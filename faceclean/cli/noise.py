"""`faceclean inject-noise` and `evaluate-cleaning`: known noise in, measured cleaning out."""

from __future__ import annotations

from pathlib import Path

import click

from faceclean.cli.common import Finite, _overwrite, _summary_table, _write_pairs, main
from faceclean.data.store import sibling
from faceclean.errors import FacecleanError
from faceclean.outputs import writing


def _fraction(name: str, default: float, text: str):
    return click.option(
        f"--{name}", type=Finite(0.0, 1.0), default=default, show_default=True, help=text
    )


@main.command("inject-noise")
@click.argument("embeddings", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="Noisy store; the truth goes to <output>.truth.parquet.",
)
@_fraction("flip", 0.05, "Fraction of samples relabelled to a random other identity.")
@_fraction("outlier", 0.05, "Fraction of identities held out and filed under others.")
@_fraction("split", 0.05, "Fraction of identities split over two labels.")
@_fraction(
    "lookalike",
    0.0,
    "Fraction of the rows filed under the most similar other identity (by centroid).",
)
@_fraction(
    "distractors",
    0.0,
    "Share of the rows made faces of people not in the set (identities removed whole).",
)
@_fraction("junk", 0.0, "Non-face rows to append (fraction of the rows); needs --junk-source.")
@click.option(
    "--junk-source",
    type=click.Path(path_type=Path),
    help="Embedding store of non-face crops (extracted with the same model) for --junk.",
)
@_fraction("duplicates", 0.0, "Near-duplicate re-encodes to append (fraction of the rows).")
@click.option(
    "--duplicate-cosine",
    type=Finite(0.0, 1.0),
    default=0.97,
    show_default=True,
    help="Cosine of a near duplicate to its source (0.97: JPEG re-encodes, measured).",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@_overwrite
def inject_noise_cmd(embeddings, output, junk_source, seed, overwrite, **fractions):
    """Corrupt a clean embedding store with known noise (in memory).

    Kinds: random flips, outlier identities, splits, look-alike flips, distractors
    (people not in the set), junk (non-faces) and near-duplicate re-encodes; the truth
    table records the kind of every row (see `evaluate-cleaning`). Plain fractions
    (--lookalike, --distractors, --junk, --duplicates) are of the store's rows."""
    from faceclean.cleaning.noise import inject_noise
    from faceclean.data.store import open_store

    if junk_source is not None and fractions["junk"] == 0:
        raise click.UsageError("--junk-source is only read with --junk R (R > 0)")
    if junk_source is not None:
        _refuse_faces_as_junk(embeddings, junk_source)
    truth = sibling(output, ".truth.parquet")
    inputs = [embeddings, *([junk_source] if junk_source else [])]
    with writing(output, overwrite=overwrite, inputs=inputs, companions=[truth]):
        source = open_store(junk_source).read() if junk_source else None
        try:
            ns = inject_noise(
                open_store(embeddings).read(),
                fractions.pop("flip"),
                fractions.pop("outlier"),
                fractions.pop("split"),
                seed,
                junk_source=source,
                **fractions,
            )
        except FacecleanError as e:  # the API works on a table: name the file here
            if e.path is not None:
                raise
            raise FacecleanError(e.message, embeddings) from None
        _write_pairs([(ns.table, output), (ns.truth, truth)])
    counts = ns.truth["noise"].value_counts().to_pylist()
    _summary_table(
        "faceclean inject-noise",
        {"output": str(output), "truth": str(truth), **{c["values"]: c["counts"] for c in counts}},
    )


def _refuse_faces_as_junk(embeddings: Path, junk_source: Path) -> None:
    """The store itself (or a copy of its rows) as the junk source would append its own
    faces, each a second copy of a row, labelled as non-faces in the truth."""
    from faceclean.data.shared_rows import shared_rows
    from faceclean.data.store import open_store, read_metadata

    stores = [(p, open_store(p)) for p in (embeddings, junk_source)]
    same = embeddings.exists() and junk_source.exists() and embeddings.samefile(junk_source)
    found = shared_rows(stores, [read_metadata(p).get("dataset") for p, _ in stores])
    if same or found:
        what = "is the store itself" if same else f"holds {len(found[2]):,} of its rows"
        raise FacecleanError(
            f"the junk source {what}: faces of the set, not non-face images", junk_source
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
@_overwrite
def evaluate_cleaning_cmd(clean_dir, truth, sweep, overwrite):
    """Precision/recall of a `faceclean clean` output against injected noise, overall and
    per noise kind (precision_<kind>: as if that kind were the only noise)."""
    from faceclean.cleaning.evaluate import evaluate_clean_dir

    result = evaluate_clean_dir(clean_dir, truth, do_sweep=sweep, overwrite=overwrite)
    _summary_table(
        "faceclean evaluate-cleaning",
        result,
        float_format="{:.3f}",
    )
