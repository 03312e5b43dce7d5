"""Thresholds the data chooses: `--tau-intra auto`, `--min-cos-pos auto`, `--min-norm auto`.

The filter scores every sample (see :mod:`.filter`); with ``auto`` it first streams the
scores into fixed histograms (memory O(bins), whatever N is) and chooses from them alone:

* ``tau_intra``: a two-component Gaussian mixture on D (clipped to [-1, 4], fitted by EM
  on the histogram): noise (a sample filed under the wrong name) sits near or below
  D = 0.5, clean samples around D = 2. tau is the D where the clean component's posterior
  reaches 1/2, capped at the D = 1 boundary (above it a sample is nearer its own class
  than any other, evidence for its label). When the mixture finds no noise component
  (weight below 0.5 %, or means less than two spreads apart) tau is the D = 1 boundary.
  Measured on celeb_dev with look-alike flips and distractors (benchmarks/bench_auto_
  threshold.py, tuning seeds 100-104), the mixture's tau landed within 0.02 F1 of the
  best threshold in hindsight; D = 1 itself within 0.03.
  Other rules tried there (the density valley, the mixture on a compressed D, a second
  pass re-centred on the kept rows, the margin cos_pos - cos_neg) did no better; what
  limits all of them is in docs/cleaning.md ("Why auto misses").
* the junk floors: Tukey's far-out fence, Q1 - 3 IQR, on cos_pos and on log(norm) (the raw
  feature norm, an image-quality proxy). A real face's cos_pos or norm is rarely that far
  below its set's quartiles (0.2 % of celeb_dev's norms); non-face crops' norms are (see the
  README). A store without a ``norm`` column has no norm floor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from faceclean.errors import FacecleanError
from faceclean.progress import RowProgress

D_RANGE, COS_RANGE, LOG_NORM_RANGE = (-1.0, 4.0), (-1.0, 1.0), (-5.0, 10.0)
BINS = 2500
MIN_NOISE_WEIGHT = 0.005
FENCE_IQR = 3.0


def parse_threshold(value, name: str) -> float | str | None:
    """A finite float, ``"auto"``, or None/``"off"`` (no threshold) from a CLI or API value."""
    if value is None or value == "off":
        return None
    if value == "auto":
        return "auto"
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise FacecleanError(f"{name} must be a number, 'auto' or 'off', not {value!r}") from None
    if not np.isfinite(v):
        raise FacecleanError(f"{name} must be a finite number, not {value!r}")
    return v


def resolve_floors(tau_intra, min_cos_pos, min_norm) -> tuple:
    """The junk floors' defaults (None: not given): ``"auto"`` when tau_intra is auto, off
    otherwise, so that a number keeps the paper's filter unchanged. Shared by the CLI and
    the search's trials, which clean as `faceclean clean --tau-intra auto` would."""
    default = "auto" if tau_intra == "auto" else None
    return (
        default if min_cos_pos is None else min_cos_pos,
        default if min_norm is None else min_norm,
    )


def parse_thresholds(tau_intra, min_cos_pos, min_norm, has_norm: bool, where) -> tuple:
    """The filter's three thresholds parsed (see :func:`parse_threshold`); a fixed
    ``min_norm`` on a store without a norm column is an error naming ``where``."""
    asked = (
        parse_threshold(tau_intra, "tau_intra"),
        parse_threshold(min_cos_pos, "min_cos_pos"),
        parse_threshold(min_norm, "min_norm"),
    )
    if asked[0] is None:
        raise FacecleanError("tau_intra must be a number or 'auto'", where)
    if isinstance(asked[2], float) and not has_norm:
        raise FacecleanError(
            "has no norm column (written by `faceclean extract`): --min-norm needs one", where
        )
    return asked


class Histogram:
    """Counts of values in BINS equal bins over ``span``; values outside land in the end
    bins (inf too); NaN is ignored."""

    def __init__(self, span: tuple[float, float]):
        self.edges = np.linspace(span[0], span[1], BINS + 1)
        self.counts = np.zeros(BINS, np.int64)

    def add(self, values: np.ndarray) -> None:
        v = np.asarray(values, np.float64)
        v = v[~np.isnan(v)]
        lo, hi = self.edges[0], self.edges[-1]
        idx = ((np.clip(v, lo, hi) - lo) / (hi - lo) * BINS).astype(np.int64)
        self.counts += np.bincount(np.minimum(idx, BINS - 1), minlength=BINS)

    @property
    def centres(self) -> np.ndarray:
        return (self.edges[:-1] + self.edges[1:]) / 2

    def quantile(self, q: float) -> float:
        """The lower edge of the bin holding the q-quantile: never above it, so a floor
        built from quantiles never drops a value equal to them (a constant column)."""
        cum = np.cumsum(self.counts)
        return float(self.edges[np.searchsorted(cum, q * cum[-1])])


def _normal(x, mean, sd):
    return np.exp(-0.5 * ((x - mean) / sd) ** 2) / sd


def two_gaussians(h: Histogram, iterations: int = 300) -> tuple[np.ndarray, ...]:
    """EM for a two-component 1-D Gaussian mixture on a histogram: (weights, means, sds),
    component 0 the lower mean. Deterministic start: means at the 5th percentile and the
    median."""
    x, w = h.centres, h.counts.astype(np.float64)
    total = w.sum()
    mean = np.array([h.quantile(0.05), h.quantile(0.5)])
    sd0 = float(np.sqrt(np.sum(w * (x - np.sum(w * x) / total) ** 2) / total))
    sd = np.array([sd0, sd0]) / 2 + 1e-3
    weight = np.array([0.2, 0.8])
    floor = (h.edges[1] - h.edges[0]) * 2  # a component never narrower than two bins
    for _ in range(iterations):
        joint = weight[:, None] * _normal(x[None], mean[:, None], sd[:, None])
        resp = joint / np.maximum(joint.sum(0), 1e-300)
        mass = (resp * w).sum(1)
        weight = mass / total
        mean = (resp * w * x).sum(1) / np.maximum(mass, 1e-12)
        sd = np.sqrt((resp * w * (x - mean[:, None]) ** 2).sum(1) / np.maximum(mass, 1e-12))
        sd = np.maximum(sd, floor)
    order = np.argsort(mean)
    return weight[order], mean[order], sd[order]


def mixture_tau_intra(h: Histogram) -> tuple[float, str]:
    """tau_intra from a histogram of D, and why (see the module doc)."""
    if h.counts.sum() < 10:
        return 1.0, "too few scored samples for a mixture: the D = 1 boundary"
    weight, mean, sd = two_gaussians(h)
    separated = mean[1] - mean[0] > 2 * max(sd[0], sd[1])
    if weight[0] < MIN_NOISE_WEIGHT or not separated:
        return 1.0, (
            f"no noise component in the D mixture (low component weight {weight[0]:.3f}, "
            f"means {mean[0]:.2f} and {mean[1]:.2f}): the D = 1 boundary"
        )
    x = h.centres
    between = (x > mean[0]) & (x < mean[1])
    post = weight[1] * _normal(x, mean[1], sd[1])
    post = post / (post + weight[0] * _normal(x, mean[0], sd[0]) + 1e-300)
    cross = np.flatnonzero(between & (post >= 0.5))
    tau = float(x[cross[0]]) if len(cross) else 1.0
    fit = (
        f"two-Gaussian mixture on D: noise {weight[0]:.1%} at {mean[0]:.2f} (sd {sd[0]:.2f}), "
        f"clean at {mean[1]:.2f} (sd {sd[1]:.2f})"
    )
    if tau > 1.0:
        return 1.0, f"{fit}; their crossing {tau:.2f} capped at the D = 1 boundary"
    return round(tau, 3), f"{fit}; tau where the clean posterior reaches 1/2"


def far_out_floor(h: Histogram) -> float:
    """Tukey's far-out fence, Q1 - 3 IQR, of a histogram."""
    q1, q3 = h.quantile(0.25), h.quantile(0.75)
    return q1 - FENCE_IQR * (q3 - q1)


@dataclass
class ScoreHistograms:
    """Streaming histograms of the scores auto thresholds are chosen from."""

    d: Histogram = field(default_factory=lambda: Histogram(D_RANGE))
    cos_pos: Histogram = field(default_factory=lambda: Histogram(COS_RANGE))
    log_norm: Histogram = field(default_factory=lambda: Histogram(LOG_NORM_RANGE))

    def add(self, d: np.ndarray, cos_pos: np.ndarray, norm: np.ndarray | None) -> None:
        self.d.add(d)
        self.cos_pos.add(cos_pos)
        if norm is not None:
            self.log_norm.add(np.log(np.maximum(np.asarray(norm, np.float64), 1e-12)))


@dataclass
class Thresholds:
    """The thresholds a filter applies (None: that floor is off) and, for each chosen
    from the data, why: ``reasons[name]``."""

    tau_intra: float
    min_cos_pos: float | None = None
    min_norm: float | None = None
    reasons: dict[str, str] = field(default_factory=dict)

    def floors(self) -> str:
        """ " with min_cos_pos X with min_norm Y" for the floors that are on."""
        pairs = (("min_cos_pos", self.min_cos_pos), ("min_norm", self.min_norm))
        return "".join(f" with {n} {v}" for n, v in pairs if v is not None)

    def summary(self) -> dict:
        """JSON-ready: the values and the reasons of the automatic ones."""
        out = {"tau_intra": self.tau_intra, "min_cos_pos": self.min_cos_pos}
        out["min_norm"] = self.min_norm
        out.update({f"{k}_auto": v for k, v in self.reasons.items()})
        return out


def choose(
    hist: ScoreHistograms | None,
    tau_intra: float | str,
    min_cos_pos: float | str | None,
    min_norm: float | str | None,
    has_norm: bool,
) -> Thresholds:
    """Resolve every ``"auto"`` from the histograms (needed only when one is auto)."""
    t = Thresholds(tau_intra=0.0)
    if tau_intra == "auto":
        t.tau_intra, t.reasons["tau_intra"] = mixture_tau_intra(hist.d)
    else:
        t.tau_intra = float(tau_intra)
    if min_cos_pos == "auto":
        t.min_cos_pos = round(far_out_floor(hist.cos_pos), 4)
        t.reasons["min_cos_pos"] = "Tukey's far-out fence Q1 - 3 IQR of cos_pos"
    else:
        t.min_cos_pos = min_cos_pos
    if min_norm == "auto":
        if has_norm:
            t.min_norm = round(float(np.exp(far_out_floor(hist.log_norm))), 4)
            t.reasons["min_norm"] = "Tukey's far-out fence Q1 - 3 IQR of log(norm)"
        else:
            t.reasons["min_norm"] = "off: the store has no norm column"
    else:
        t.min_norm = min_norm
    return t


def choose_thresholds(asked, has_norm, batches, total: int, progress: bool):
    """The filter's thresholds: each ``"auto"`` resolved from one scoring pass into
    histograms. ``batches`` is the filter's lazy ``(batch, scores)`` stream
    (:func:`faceclean.cleaning.filter.score_batches`, passed in so that this module need not
    import the filter), read only when something is ``"auto"``; ``total`` its row count."""
    if "auto" not in asked:
        return choose(None, *asked, has_norm)
    hist = ScoreHistograms()
    bar = RowProgress(progress, "filter: choosing thresholds", total)
    for batch, scores in batches:
        bar.advance(len(batch["label"]))
        hist.add(scores["discriminability"], scores["cos_pos"], batch.get("norm"))
    bar.close()
    return choose(hist, *asked, has_norm)


def group_sums(sums: np.ndarray, counts: np.ndarray, group: np.ndarray | None) -> tuple:
    """(sums, counts, group) per identity group: a label's sums and counts added into its
    group representative's row (``group`` = a merge's ``merged_label``); unchanged with
    None."""
    if group is None:
        return sums, counts, None
    group = np.asarray(group, np.int64)[: len(counts)]
    g_sums, g_counts = np.zeros_like(sums), np.zeros_like(counts)
    np.add.at(g_sums, group, sums)
    np.add.at(g_counts, group, counts)
    return g_sums, g_counts, group
