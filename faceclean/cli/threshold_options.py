"""Threshold options of the cleaning verbs that take a number or ``auto`` (issue 20)."""

from __future__ import annotations

import click

from faceclean.cli.common import Finite


class NumberOrAuto(Finite):
    """A finite float, or one of ``words`` (``auto``; ``off`` for the floors)."""

    def __init__(self, words: tuple[str, ...] = ("auto",), **kwargs):
        super().__init__(**kwargs)
        self.words = words
        self.name = "number|" + "|".join(words)

    def convert(self, value, param, ctx):
        if isinstance(value, str) and value.strip().lower() in self.words:
            return value.strip().lower()
        return super().convert(value, param, ctx)

    def _describe_range(self) -> str:
        return "|".join(self.words) + (f" or {super()._describe_range()}")


def tau_intra_option(default="0.3"):
    return click.option(
        "--tau-intra",
        type=NumberOrAuto(),
        default=default,
        show_default=True,
        help="Drop samples whose discriminability D is below this (paper: 0.3); auto: "
        "chosen from the distribution of D (a two-Gaussian mixture, capped at D = 1), "
        "the choice and why in the summary.",
    )


def floor_options(f):
    """``--min-cos-pos`` and ``--min-norm``: absolute floors for junk."""
    for name, what in (
        ("--min-norm", "raw feature norm (the store's norm column; non-faces have low norms)"),
        ("--min-cos-pos", "cosine to the own (leave-one-out) centroid"),
    ):
        f = click.option(
            name,
            type=NumberOrAuto(("auto", "off")),
            default=None,
            help=f"Also drop samples whose {what} is below this; auto: a far-out fence of "
            "its distribution [default: auto with --tau-intra auto, else off].",
        )(f)
    return f


def tau_inter_option(f):
    """``--tau-inter`` (a cosine or auto) and ``--min-link-ratio`` (the look-alike guard)."""
    f = click.option(
        "--min-link-ratio",
        type=NumberOrAuto(("auto", "off")),
        default=None,
        help="Look-alike guard: a link also needs mean cross-class cosine / sqrt(product of "
        "the two mean within-class cosines) >= this; auto: from classes split in two "
        "[default: auto with --tau-inter auto, else off].",
    )(f)
    return click.option(
        "--tau-inter",
        type=NumberOrAuto(min=-1.0, max=1.0),
        default="0.62",
        show_default=True,
        help="Merge classes whose centroid cosine exceeds this (paper: 0.62; below 0 needs "
        "--force); auto: what two halves of one class reach (see the summary's reason).",
    )(f)


def resolve_link_ratio(tau_inter, min_link_ratio):
    """The guard's default: auto when tau_inter is auto, off otherwise; 'off' is None."""
    if min_link_ratio is None:
        return "auto" if tau_inter == "auto" else None
    return None if min_link_ratio == "off" else min_link_ratio


def resolve_floors(tau_intra, min_cos_pos, min_norm) -> tuple:
    """See :func:`faceclean.cleaning.thresholds.resolve_floors` (imported when called, so
    that ``--help`` does not load NumPy)."""
    from faceclean.cleaning.thresholds import resolve_floors as resolve

    return resolve(tau_intra, min_cos_pos, min_norm)
