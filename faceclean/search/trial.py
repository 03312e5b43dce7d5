"""One real search trial: clean with the sampled thresholds, train the sampled backbone
with the sampled unified loss, score ACC on the validation identities.

Cleaning depends only on (tau_intra, tau_inter) and the precomputed embeddings, so it is
cached by that pair and shared by every trial that samples it. tau_intra ``"auto"`` cleans
as `faceclean clean --tau-intra auto` does (junk floors auto too): the threshold is chosen
from the embeddings, and the trial returns it as ``tau_intra_chosen`` with the reason
(``tau_intra_reason``), so the log says what every auto trial trained on.

Proxy mode (``identities=N``): each trial trains on the images of N identities drawn once
with ``subset_seed`` from the embeddings' labels (the same N for every trial, so rewards
compare), and with ``train_kwargs["max_steps"]`` for a fixed number of SGD steps; both are
returned with the trial and so recorded in the log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from faceclean.cleaning.clean import clean, read_clean_summary
from faceclean.cleaning.thresholds import resolve_floors
from faceclean.data.store import atomic_path, read_metadata
from faceclean.errors import FacecleanError
from faceclean.training.backbones import count_macs
from faceclean.training.run import TrainConfig, build_backbone
from faceclean.training.train import evaluate_run, train
from faceclean.training.verification import FARS


def acc_weights(n: int) -> list[float]:
    """The paper's ACC weights: 0.5/0.25/0.25 for three FARs, else equal."""
    return [0.5, 0.25, 0.25] if n == 3 else [1 / n] * n


def resolved_acc(
    fars: tuple[float, ...], tars: list[float], resolved: list[bool]
) -> tuple[float, dict[str, float], float]:
    """(ACC, {far: weight}, chance ACC) over the FARs the validation set resolves (>= 1
    impostor pair per 1/FAR): the others are left out and the weights renormalised, instead
    of counting a TAR no threshold can measure. Chance ACC is the ACC of random scores (TAR
    = FAR) with the same weights. When no FAR is resolved, all are kept (the weights
    returned say which were used)."""
    base = acc_weights(len(fars))
    keep = [i for i, ok in enumerate(resolved) if ok] or list(range(len(fars)))
    total = sum(base[i] for i in keep)
    weights = {f"{fars[i]:g}": base[i] / total for i in keep}
    acc = sum(base[i] / total * tars[i] for i in keep)
    chance = sum(base[i] / total * fars[i] for i in keep)
    return float(acc), weights, float(chance)


def acc_fields(scores: dict, fars: tuple[float, ...]) -> dict:
    """A trial's score fields from :func:`evaluate_embeddings`'s ``scores``: acc (over the
    resolved FARs, see :func:`resolved_acc`), chance_acc, acc_weights, impostor_pairs,
    tars {far: TAR}."""
    tars = [scores[f"tar@far={f:g}"] for f in fars]
    resolved = [scores[f"resolved@far={f:g}"] for f in fars]
    acc, weights, chance = resolved_acc(fars, tars, resolved)
    return {
        "acc": acc,
        "chance_acc": chance,
        "acc_weights": weights,
        "impostor_pairs": scores["impostor_pairs"],
        "tars": {f"{f:g}": t for f, t in zip(fars, tars, strict=True)},
    }


def budget_steps(max_steps: int | None, budget: float) -> int:
    """The SGD steps of a trial of ``budget`` (share of a full trial of ``max_steps``)."""
    if max_steps is None:
        raise FacecleanError("a multi-fidelity search (--fidelity) needs --max-steps")
    if not 0 < budget <= 1:
        raise FacecleanError(f"a trial's budget must be in (0, 1], got {budget}")
    return max(1, round(budget * max_steps))


def chosen_fields(clean_summary: dict) -> dict:
    """What a trial's cleaning applied, for its log line: ``tau_intra_chosen`` (the chosen
    value when the combo says "auto", else the combo's) and ``tau_intra_reason``."""
    return {
        "tau_intra_chosen": clean_summary["tau_intra"],
        "tau_intra_reason": clean_summary.get("tau_intra_auto"),
    }


@dataclass
class FaceTrial:
    """A picklable trial function ``(combo, seed) -> {acc, macs, ...}``.

    Args:
        embeddings: the embedding store of the (noisy) training set.
        val: validation identities (folder or list) for TAR@FAR.
        work_dir: where cleanings (``clean/``) and trial runs (``trials/``) go.
        data_root: image root of the training set [default: recorded in the embeddings].
        train_kwargs: TrainConfig fields shared by every trial (input size, epochs, ...).
        fars: FARs for ACC; the paper's 1e-3, 1e-4, 1e-5 by default.
        identities: proxy mode, train each trial on this many identities (None: all).
        subset_seed: seed of the identity subset.
    """

    embeddings: str
    val: str
    work_dir: str
    data_root: str | None = None
    train_kwargs: dict = field(default_factory=dict)
    fars: tuple = FARS
    identities: int | None = None
    subset_seed: int = 0

    def clean_list(self, tau_intra: float | str, tau_inter: float) -> Path:
        """The clean list of (tau_intra, tau_inter), cleaned once into ``clean/`` (tau_intra
        a number or ``"auto"``); the proxy subset of it in proxy mode."""
        name = tau_intra if isinstance(tau_intra, str) else f"{tau_intra:.4f}"
        out = Path(self.work_dir) / "clean" / f"{name}_{tau_inter:.4f}"
        if not (out / "summary.json").exists():
            cos_floor, norm_floor = resolve_floors(tau_intra, None, None)
            clean(
                self.embeddings,
                out,
                tau_intra,
                tau_inter,
                min_cos_pos=cos_floor,
                min_norm=norm_floor,
            )
        if self.identities is None:
            return out / "clean.parquet"
        return self.subset_list(out / "clean.parquet")

    def subset(self) -> np.ndarray:
        """The proxy identities: ``identities`` original labels drawn with ``subset_seed``."""
        labels = np.unique(pq.read_table(self.embeddings, columns=["label"])["label"].to_numpy())
        if self.identities > len(labels):
            raise FacecleanError(
                f"--trial-identities {self.identities} > the {len(labels)} identities there",
                self.embeddings,
            )
        rng = np.random.default_rng(self.subset_seed)
        return np.sort(rng.choice(labels, self.identities, replace=False))

    def subset_list(self, clean_list: Path) -> Path:
        """The clean list restricted to the proxy identities, labels made contiguous."""
        out = clean_list.with_name(f"subset{self.identities}_seed{self.subset_seed}.parquet")
        if out.exists():
            return out
        table = pq.read_table(clean_list)
        ids = pa.array(self.subset(), type=table.schema.field("original_label").type)
        table = table.filter(pc.is_in(table["original_label"], ids))
        if table.num_rows == 0:
            raise FacecleanError("cleaning kept no image of the proxy identities", clean_list)
        _, contiguous = np.unique(table["label"].to_numpy(), return_inverse=True)
        table = table.set_column(
            table.schema.get_field_index("label"), "label", pa.array(contiguous.astype(np.int64))
        )
        with atomic_path(out) as tmp:
            pq.write_table(table, tmp)
        return out

    def config(self, combo: dict, seed: int, budget: float | None = None) -> TrainConfig:
        root = self.data_root or read_metadata(self.embeddings).get("dataset")
        loss = {k: combo[k] for k in ("m1", "m2", "m3", "s_p", "s_n")}
        kwargs = dict(self.train_kwargs)
        if budget is not None:
            kwargs["max_steps"] = budget_steps(kwargs.get("max_steps"), budget)
        return TrainConfig(
            clean_list=str(self.clean_list(combo["tau_intra"], combo["tau_inter"])),
            data_root=root,
            width=combo["width"],
            depth=combo["depth"],
            loss="unified",
            loss_kwargs=loss,
            seed=seed,
            **kwargs,
        )

    def __call__(
        self, combo: dict, seed: int, run_name: str | None = None, budget: float | None = None
    ) -> dict:
        """Clean, train and score one combination; ``budget`` (multi-fidelity search, in (0,
        1]) trains round(budget x max_steps) steps instead of max_steps."""
        cfg = self.config(combo, seed, budget)
        run = Path(self.work_dir) / "trials" / (run_name or f"seed{seed}")
        summary = train(cfg, run)
        scores = evaluate_run(run, self.val, self.fars)
        model = build_backbone(cfg)
        clean_summary = read_clean_summary(Path(cfg.clean_list).parent)
        return {
            **acc_fields(scores, self.fars),
            "macs": count_macs(model),
            "params": sum(p.numel() for p in model.parameters()),
            **chosen_fields(clean_summary),
            "clean_rows": clean_summary["clean_rows"],
            "clean_classes": clean_summary["clean_classes"],
            "train_steps": summary["steps"],
            "max_steps": cfg.max_steps,
            "trial_identities": self.identities,
            "run_dir": str(run),
        }
