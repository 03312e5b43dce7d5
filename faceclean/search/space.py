"""The joint search space: nine tokens in the order data -> loss -> backbone.

Each token is a discrete list of choices. The defaults follow the paper's sizes (13, 7, 8,
8, 8, 14, 14, 10, 10 choices) around its best MS1MV2 setting (tau_intra 0.3, tau_inter
0.62, m1 1.15, m2 0.22, m3 0, s_p 40, s_n 48, D 1.47, W 0.84). A user edits a TOML file:

    [tokens]
    tau_intra = [0.1, 0.2, 0.3]
    ...

tau_intra may also offer ``"auto"`` (``tau_intra = [0.2, 0.3, "auto"]``): a trial with it
cleans as `faceclean clean --tau-intra auto` does, choosing tau from its own data (see
:mod:`faceclean.cleaning.thresholds`), and its log line records the value chosen
(``tau_intra_chosen``). The default space offers numbers only.

``aspects`` restricts the search to data, loss and/or backbone tokens; the others are
fixed at the baseline (no cleaning, ArcFace s=64 m=0.5, W = D = 1), as in the paper's
Table 1 ablation.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from faceclean.errors import FacecleanError
from faceclean.training.backbones import DEPTH_RANGE, WIDTH_RANGE

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

AUTO = "auto"
AUTO_TOKENS = ("tau_intra",)  # tokens that may offer AUTO: a threshold the data chooses
TOKENS = ("tau_intra", "tau_inter", "m1", "m2", "m3", "s_p", "s_n", "depth", "width")
ASPECTS = {"data": TOKENS[:2], "loss": TOKENS[2:7], "backbone": TOKENS[7:]}
# No cleaning (keep D >= 0, never merge), ArcFace s=64 m=0.5, the base backbone.
BASELINE = {
    "tau_intra": 0.0,
    "tau_inter": 1.01,
    "m1": 1.0,
    "m2": 0.5,
    "m3": 0.0,
    "s_p": 64.0,
    "s_n": 64.0,
    "depth": 1.0,
    "width": 1.0,
}


def _grid(lo: float, hi: float, n: int) -> list[float]:
    return [round(lo + (hi - lo) * i / (n - 1), 4) for i in range(n)]


DEFAULT_CHOICES: dict[str, list[float]] = {
    "tau_intra": _grid(0.0, 0.6, 13),
    "tau_inter": _grid(0.5, 0.8, 7),
    "m1": _grid(0.95, 1.3, 8),
    "m2": _grid(0.0, 0.35, 8),
    "m3": _grid(0.0, 0.35, 8),
    "s_p": _grid(30, 69, 14),
    "s_n": _grid(30, 69, 14),
    "depth": _grid(1.0, 1.54, 10),
    "width": _grid(0.78, 1.05, 10),
}

_RANGES = {
    "tau_intra": (-1, 10),
    "tau_inter": (-1, 1.01),
    "m1": (1e-6, 4),
    "m2": (-0.5, 1.5),
    "m3": (-0.5, 1.0),
    "s_p": (1e-6, 256),
    "s_n": (1e-6, 256),
    "depth": DEPTH_RANGE,
    "width": WIDTH_RANGE,
}


@dataclass(frozen=True)
class SearchSpace:
    """Choices per token; a token with one choice is fixed."""

    choices: dict[str, tuple[float | str, ...]]  # str: AUTO, in AUTO_TOKENS only

    @property
    def sizes(self) -> list[int]:
        return [len(self.choices[t]) for t in TOKENS]

    def decode(self, indices: list[int]) -> dict[str, float | str]:
        """Token indices -> the combination they name."""
        return {t: self.choices[t][i] for t, i in zip(TOKENS, indices, strict=True)}

    def restrict(self, aspects: str) -> SearchSpace:
        """Keep the tokens of ``aspects`` ("all" or e.g. "data,loss"); baseline the rest."""
        names = [a.strip() for a in aspects.split(",")]
        if names == ["all"]:
            return self
        bad = [a for a in names if a not in ASPECTS]
        if bad:
            raise FacecleanError(f"unknown aspect(s) {bad}; use data, loss, backbone or all")
        keep = {t for a in names for t in ASPECTS[a]}
        return SearchSpace({t: self.choices[t] if t in keep else (BASELINE[t],) for t in TOKENS})


def validate(choices: dict, source: str = "search space") -> SearchSpace:
    """Check token names, that every list is non-empty, numeric and in range (``"auto"``
    allowed, once, in AUTO_TOKENS)."""
    # A TOML file may hold `tokens = 3` or `[[tokens]]` (an array of tables): not a table.
    if not isinstance(choices, dict):
        raise FacecleanError(
            f"[tokens] must be a table of token = [choices], not {type(choices).__name__}", source
        )
    unknown = set(choices) - set(TOKENS)
    if unknown:
        raise FacecleanError(
            f"unknown token(s) {sorted(unknown)}; tokens are {list(TOKENS)}", source
        )
    out = {}
    for t in TOKENS:
        values = choices.get(t, DEFAULT_CHOICES[t])
        if not isinstance(values, list | tuple) or not values:
            raise FacecleanError(f"token {t!r} needs a non-empty list of numbers", source)
        numbers = [v for v in values if not (t in AUTO_TOKENS and v == AUTO)]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in numbers):
            also = " (numbers or 'auto')" if t in AUTO_TOKENS else ""
            raise FacecleanError(f"token {t!r} has a non-numeric choice{also}: {values}", source)
        if len(values) - len(numbers) > 1:
            raise FacecleanError(f"token {t!r} offers 'auto' more than once", source)
        lo, hi = _RANGES[t]
        wrong = [v for v in numbers if not lo <= v <= hi]
        if wrong:
            raise FacecleanError(f"token {t!r}: {wrong} outside [{lo}, {hi}]", source)
        out[t] = tuple(v if v == AUTO else float(v) for v in values)
    return SearchSpace(out)


def load_space(path: str | Path | None = None, aspects: str = "all") -> SearchSpace:
    """The default space, or one read from a TOML file with a ``[tokens]`` table."""
    if path is None:
        return validate(DEFAULT_CHOICES).restrict(aspects)
    path = Path(path)
    if path.is_dir():
        raise FacecleanError("is a folder, not a TOML search space file", path)
    try:
        # tomllib's own reading: TOML is UTF-8, so a binary or UTF-16 file is a decode error.
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise FacecleanError("search space file not found", path) from None
    except UnicodeDecodeError as e:
        raise FacecleanError(
            f"not a UTF-8 TOML file ({e.reason} at byte {e.start})", path
        ) from None
    except tomllib.TOMLDecodeError as e:
        raise FacecleanError(f"not valid TOML: {e}", path) from None
    if "tokens" not in data:
        raise FacecleanError("needs a [tokens] table", path)
    return validate(data["tokens"], str(path)).restrict(aspects)


def choice_label(value: float | str) -> str:
    """A choice as plots and tables show it: ``0.3``, ``auto``."""
    return value if isinstance(value, str) else f"{value:g}"


def difficulty(combo: dict, chosen_tau_intra: float | None = None) -> tuple:
    """(data difficulty 1 - tau_intra + tau_inter, loss difficulty s_n (m1-1+m2+m3) / s_p).
    With tau_intra ``"auto"`` the data difficulty uses ``chosen_tau_intra`` (what the trial's
    data chose), and is None when there is none (a failed trial)."""
    tau = combo["tau_intra"]
    if tau == AUTO:
        tau = chosen_tau_intra
    data = None if tau is None else 1 - tau + combo["tau_inter"]
    loss = combo["s_n"] * (combo["m1"] - 1 + combo["m2"] + combo["m3"]) / combo["s_p"]
    return data, loss
