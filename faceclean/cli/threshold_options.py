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


def resolve_floors(tau_intra, min_cos_pos, min_norm) -> tuple:
    """The floors' defaults: auto when tau_intra is auto, off otherwise."""
    default = "auto" if tau_intra == "auto" else None
    return (
        default if min_cos_pos is None else min_cos_pos,
        default if min_norm is None else min_norm,
    )
