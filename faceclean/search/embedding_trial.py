"""A search trial of seconds: a small head trained on the extractor's embeddings.

Instead of training a backbone on images, :class:`EmbeddingHeadTrial` trains a small MLP on
the training store's embeddings (the extractor's features of the same images a real trial
would read), with the trial's cleaning and its unified margin loss, and scores TAR@FAR on
the validation identities' embeddings (a validation store from the same extractor) passed
through the head. What maps where:

- cleaning: exactly a real trial's (:meth:`FaceTrial.clean_list`, cached by (tau_intra,
  tau_inter) under ``work_dir/clean``); the head trains on the clean list's rows, with its
  clean labels, joined back to the store's embeddings by path;
- loss: the unified margin loss with the trial's (m1, m2, m3, s_p, s_n);
- backbone: the head's depth and width follow the trial's D and W tokens: round(2 D)
  hidden layers of round(``hidden`` W) units (D = W = 1: two layers of ``hidden``);
- ACC: the TARs at the FARs the validation set resolves, weights renormalised, as a real
  trial (:func:`faceclean.search.trial.acc_fields`).

A trial's ``macs`` is the MobileFaceNet's of its (W, D) at ``input_size``, what the real
trial would report, so rewards have the same scale at both fidelities (the head's own are in
``head_macs``). ``budget`` (multi-fidelity, in (0, 1]) trains round(budget x ``steps``)
steps. Deterministic given the seed (CPU, the same thread count).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from torch import nn

from faceclean.cleaning.clean import read_clean_summary
from faceclean.data.store import iter_embeddings
from faceclean.errors import FacecleanError
from faceclean.search.trial import FaceTrial, acc_fields, budget_steps, chosen_fields
from faceclean.training.losses import create_head
from faceclean.training.verification import FARS, evaluate_embeddings


def read_store(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings float32 [n, d], labels int64 [n]) of an embedding store; rows without a
    label are left out."""
    parts = list(iter_embeddings(path, ("label", "embedding")))
    if not parts:
        raise FacecleanError("the embedding store holds no row", path)
    emb = np.concatenate([p["embedding"] for p in parts])
    labels = np.concatenate([p["label"] for p in parts])
    ok = ~np.isnan(labels.astype(np.float64)) if labels.dtype.kind == "f" else slice(None)
    return emb[ok], labels[ok].astype(np.int64)


def joined_rows(store: str | Path, clean_list: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings [n, d] from ``store``, clean labels [n]) of a clean list's rows (Parquet:
    path, label), joined to the store by path."""
    kept = pq.read_table(clean_list, columns=["path", "label"])
    paths = pq.read_table(store, columns=["path"])["path"].to_pylist()
    emb, _ = read_store(store)
    if len(emb) != len(paths):
        raise FacecleanError("rows without a label cannot be joined by path", store)
    # A path may repeat (appended noise rows): the clean list keeps the store's order, so
    # the k-th kept row of a path is its k-th row in the store.
    where: dict[str, list[int]] = {}
    for i, p in enumerate(paths):
        where.setdefault(p, []).append(i)
    index = []
    for p in kept["path"].to_pylist():
        rows = where.get(p)
        if not rows:
            raise FacecleanError(f"clean list row {p!r} is not in the store", clean_list)
        index.append(rows.pop(0))
    return emb[np.asarray(index, dtype=np.int64)], kept["label"].to_numpy()


def head_layers(width: float, depth: float, hidden: int) -> tuple[int, int]:
    """(hidden layers, units per layer) of the head for the W and D tokens."""
    return max(1, round(2 * depth)), max(8, round(hidden * width))


class Head(nn.Module):
    """Linear + BatchNorm + PReLU blocks, then a linear embedding layer and BatchNorm (as
    MobileFaceNet ends); input the extractor's unit embeddings [N, d_in], output [N, d_out]
    (d_out = d_in: the extractor's embedding plus the MLP's, see below)."""

    def __init__(self, d_in: int, d_out: int, layers: int, units: int):
        super().__init__()
        blocks: list[nn.Module] = []
        for i in range(layers):
            blocks += [nn.Linear(d_in if i == 0 else units, units), nn.BatchNorm1d(units)]
            blocks.append(nn.PReLU(units))
        blocks += [nn.Linear(units, d_out), nn.BatchNorm1d(d_out)]
        self.net = nn.Sequential(*blocks)
        # Residual on the extractor's embedding when the sizes match, the MLP's branch
        # starting at 0: the head starts as the extractor and learns a correction, rather
        # than re-learning from ~150 identities what the extractor knew from thousands.
        self.skip = d_in == d_out
        if self.skip:
            nn.init.zeros_(blocks[-1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) + (x if self.skip else 0)


def head_macs(d_in: int, d_out: int, layers: int, units: int) -> int:
    """Multiply-accumulates of one forward pass of :class:`Head` (linear layers)."""
    return d_in * units + (layers - 1) * units * units + units * d_out


@functools.lru_cache(maxsize=256)
def backbone_macs(width: float, depth: float, embedding_size: int, input_size: int) -> int:
    """The MACs a real trial of (W, D) reports (MobileFaceNet at ``input_size``)."""
    from faceclean.training.backbones import MobileFaceNet, count_macs

    return count_macs(MobileFaceNet(width, depth, embedding_size, input_size))


@dataclass
class EmbeddingHeadTrial:
    """A picklable trial function ``(combo, seed, budget=None) -> {acc, macs, ...}``.

    Args:
        embeddings: the (noisy) training set's embedding store.
        val_store: the validation identities' embedding store, same extractor.
        work_dir: where cleanings go (``clean/``, shared with real trials in that folder).
        fars: FARs of ACC.
        steps: SGD steps of a full (budget 1) trial.
        batch_size: rows per step.
        lr: initial learning rate (cosine decay to 0; momentum 0.9, weight decay 5e-4).
            0.01: at 0.1 the head moved far from the extractor (celeb_dev, 140 training
            identities: ACC 0.46-0.59 against the raw embeddings' 0.88; at 0.01, 0.81-0.83).
        hidden: units per layer at W = 1.
        embedding_size, input_size: of the MobileFaceNet whose MACs are reported as
            ``macs`` (the head's output has the extractor's dimension: it is residual).
        identities: proxy mode, train on this many identities (as FaceTrial; None: all).
        subset_seed: seed of that identity subset.
    """

    embeddings: str
    val_store: str
    work_dir: str
    fars: tuple = FARS
    steps: int = 300
    batch_size: int = 256
    lr: float = 0.01
    hidden: int = 256
    embedding_size: int = 128
    input_size: int = 112
    identities: int | None = None
    subset_seed: int = 0

    def _cleaner(self) -> FaceTrial:
        # The cleaning (and proxy subset) of a real trial, so both levels see the same rows.
        return FaceTrial(
            self.embeddings, "", self.work_dir, identities=self.identities,
            subset_seed=self.subset_seed,
        )  # fmt: skip

    def training_rows(self, tau_intra: float, tau_inter: float):
        """(embeddings [n, d], clean labels [n]) of the rows the trial's cleaning keeps."""
        return joined_rows(self.embeddings, self._cleaner().clean_list(tau_intra, tau_inter))

    def validation(self, dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The validation store's (embeddings, labels), checked: >= 2 identities and, given
        ``dim``, the training embeddings' dimension (the same extractor)."""
        emb, labels = read_store(self.val_store)
        if len(np.unique(labels)) < 2:
            raise FacecleanError("the validation store needs >= 2 identities", self.val_store)
        if dim is not None and emb.shape[1] != dim:
            raise FacecleanError(
                f"validation embeddings have dimension {emb.shape[1]}, the training "
                f"store's {dim}: not the same extractor",
                self.val_store,
            )
        return emb, labels

    def check_stores(self) -> None:
        """Refuse, before any trial runs, a validation store every trial would fail on."""
        self.validation(read_store(self.embeddings)[0].shape[1])

    def __call__(
        self, combo: dict, seed: int, run_name: str | None = None, budget: float | None = None
    ) -> dict:
        """Clean, train the head, score ACC on the validation embeddings. ``run_name`` is
        accepted for the trial interface (nothing is written per trial)."""
        steps = self.steps if budget is None else budget_steps(self.steps, budget)
        clean_list = self._cleaner().clean_list(combo["tau_intra"], combo["tau_inter"])
        x, y = joined_rows(self.embeddings, clean_list)
        # Every trial logs the tau_intra its cleaning applied (an "auto" one the chosen
        # value): the data difficulty and the log depend on it, as for a real trial.
        chosen = chosen_fields(read_clean_summary(clean_list.parent))
        return {**self.fit_score(x, y, combo, seed, steps), **chosen}

    def fit_score(self, x: np.ndarray, y: np.ndarray, combo: dict, seed: int, steps: int) -> dict:
        """Train the head of ``combo`` (its loss and W/D; the cleaning is the caller's: the
        rows given) on embeddings ``x`` [n, d] with labels ``y`` (0..K-1) for ``steps``
        SGD steps and score it on the validation store."""
        val_x, val_y = self.validation(x.shape[1])
        torch.manual_seed(seed)
        layers, units = head_layers(combo["width"], combo["depth"], self.hidden)
        dim = x.shape[1]
        head = Head(dim, dim, layers, units)
        loss_fn = create_head(
            "unified", dim, int(y.max()) + 1,
            **{k: combo[k] for k in ("m1", "m2", "m3", "s_p", "s_n")},
        )  # fmt: skip
        params = [*head.parameters(), *loss_fn.parameters()]
        opt = torch.optim.SGD(params, lr=self.lr, momentum=0.9, weight_decay=5e-4)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.5 * (1 + np.cos(np.pi * s / steps))
        )
        xt, yt = torch.from_numpy(x.copy()), torch.from_numpy(y.copy())
        gen = torch.Generator().manual_seed(seed)
        batch = min(self.batch_size, len(x))
        head.train()
        for _ in range(steps):
            idx = torch.randint(0, len(x), (batch,), generator=gen)
            loss = loss_fn(head(xt[idx]), yt[idx])
            if not torch.isfinite(loss):
                raise FacecleanError("the head's loss diverged (not finite)")
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        head.eval()
        with torch.no_grad():
            out = F.normalize(head(torch.from_numpy(val_x))).numpy()
        return {
            **acc_fields(evaluate_embeddings(out, val_y, self.fars), self.fars),
            "macs": backbone_macs(
                combo["width"], combo["depth"], self.embedding_size, self.input_size
            ),
            "head_macs": head_macs(dim, dim, layers, units),
            "clean_rows": len(x),
            "clean_classes": int(y.max()) + 1,
            "train_steps": steps,
            "max_steps": self.steps,
            "trial_identities": self.identities,
            "trial_kind": "embedding-head",
        }
