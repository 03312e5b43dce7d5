"""`faceclean overlap`: training identities that are also evaluation identities.

A face model evaluated on people it was trained on scores too well. A training class and an
evaluation class are taken to be one person when their centroids' cosine exceeds ``tau``
(the same rule, and the same exact inner-product search, as `faceclean merge`); optionally
single images that appear in both stores (cosine above ``image_tau``: the same photo, or a
crop or re-encode of it) are listed too, whatever their labels.

Outputs, in one folder built aside and swapped in whole (:mod:`faceclean.outputs`):
``identity_pairs.parquet`` (``train_label``, ``train_identity``, ``eval_label``,
``eval_identity``, ``cosine``, best first), ``exclude.parquet`` (the training classes to
drop: ``label``, ``identity``, their best evaluation match and its ``cosine``), with
``image_tau`` ``image_pairs.parquet`` (``train_path``, ``train_label``, ``eval_path``,
``eval_label``, ``cosine``), and ``summary.json``. `faceclean clean --exclude OUT` drops the
classes of ``exclude.parquet``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from faceclean.cleaning.faiss_backend import InnerProductIndex, pairs_above
from faceclean.cleaning.store_sums import _checked_batches, class_sums, normalise_rows
from faceclean.data.store import (
    as_paths,
    atomic_path,
    iter_embeddings,
    open_stores,
    read_metadata,
)
from faceclean.errors import FacecleanError
from faceclean.outputs import writing

EXCLUDE_FILE = "exclude.parquet"


def identities(paths) -> dict[int, str]:
    """label -> identity name of one or several stores (the label itself when absent)."""
    names: dict[int, str] = {}
    for path in as_paths(paths):
        has = "identity" in open_stores([path])[0][1].schema_arrow.names
        cols = ("label", "identity") if has else ("label",)
        for batch in iter_embeddings(path, cols):
            labels = batch["label"]
            new, first = np.unique(labels, return_index=True)
            for lab, i in zip(new.tolist(), first.tolist(), strict=True):
                if lab not in names:
                    names[lab] = str(batch["identity"][i]) if has else str(lab)
    return names


def paths_of(embeddings, rows: np.ndarray) -> list[str]:
    """The ``path`` of the given rows (sorted, numbered in order across the stores),
    streaming the stores: memory holds those paths only."""
    out, start = [], 0
    for path in as_paths(embeddings):
        for b in iter_embeddings(path, ("path",)):
            n = len(b["path"])
            lo, hi = np.searchsorted(rows, [start, start + n])
            out += b["path"][rows[lo:hi] - start].tolist()
            start += n
    return out


def unit_rows(paths) -> tuple[np.ndarray, np.ndarray]:
    """(labels int64, unit embeddings float32) of whole stores, in memory (for the
    evaluation side of ``image_tau``, which is small; the training side is streamed)."""
    labels, emb = [], []
    for b in _checked_batches(paths, ("label", "embedding"), 65536):
        labels.append(b["label"])
        emb.append(np.asarray(b["embedding"], np.float32))
    return np.concatenate(labels).astype(np.int64), np.concatenate(emb)


def image_pairs_above(
    train, evaluation_rows: np.ndarray, tau: float, batch_rows: int = 65536
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every (training row, evaluation row, cosine) above ``tau``, exactly: the training
    stores streamed batch by batch against the evaluation embeddings (blocked BLAS), so
    memory holds the evaluation side and one batch. Returns (rows, cols, cosines, the
    training labels of every row)."""
    index = InnerProductIndex(evaluation_rows, "cpu", "blas")
    rows, cols, sims, labels, start = [], [], [], [], 0
    for b in _checked_batches(train, ("label", "embedding"), batch_rows):
        r, c, s = index.above(b["embedding"], tau)
        rows.append(r + start)
        cols.append(c)
        sims.append(s)
        labels.append(b["label"])
        start += len(b["label"])
    cat = np.concatenate
    return cat(rows), cat(cols), cat(sims), cat(labels).astype(np.int64)


def _comparable(train, evaluation) -> None:
    """Cosines across two stores mean something only for one model and preprocessing;
    their label spaces are their own."""
    (tp, tpf), (ep, epf) = train, evaluation
    if Path(tp).resolve() == Path(ep).resolve() or os.path.samefile(tp, ep):
        # Every identity would "overlap" itself: a mistyped argument, not a finding.
        raise FacecleanError("the training and evaluation stores are the same file", ep)
    td = tpf.schema_arrow.field("embedding").type.list_size
    ed = epf.schema_arrow.field("embedding").type.list_size
    if td != ed:
        raise FacecleanError(f"embedding dimension {ed} does not match {td} of {tp.name}", ep)
    tm, em = read_metadata(tp), read_metadata(ep)
    for key in ("model_sha256", "preprocessing", "flip"):
        if key in tm and key in em and tm[key] != em[key]:
            raise FacecleanError(
                f"the {key.replace('_', ' ')} differs from {tp.name}'s: embeddings of two "
                "models (or preprocessings) cannot be compared; extract both with one",
                ep,
            )


@dataclass
class OverlapResult:
    identity_pairs: pa.Table
    exclude: pa.Table
    image_pairs: pa.Table | None
    summary: dict


def find_overlap(
    train,
    evaluation,
    tau: float,
    image_tau: float | None = None,
    device: str = "auto",
    backend: str = "auto",
) -> OverlapResult:
    """Training classes whose centroid is within ``tau`` (cosine) of an evaluation centroid.

    Args:
        train, evaluation: embedding stores (one path or the shards of one), same dimension.
        tau: centroid cosine above which two classes are one identity.
        image_tau: also list image pairs across the stores with cosine above this (None:
            no image search). Exact: the training stores are streamed against the
            evaluation embeddings (held in memory, float32), so memory is flat in the
            training rows; the time is N_train x N_eval x d multiply-adds.
        device, backend: the inner-product search, as in `faceclean filter`.
    """
    if not -1.0 <= tau <= 1.0 or (image_tau is not None and not -1.0 <= image_tau <= 1.0):
        raise FacecleanError("cosine thresholds must lie in [-1, 1]")
    train, evaluation = as_paths(train), as_paths(evaluation)
    _comparable(open_stores(train)[0], open_stores(evaluation)[0])
    ts, tc = class_sums(train)
    es, ec = class_sums(evaluation)
    for paths, counts, role in ((train, tc, "training"), (evaluation, ec, "evaluation")):
        if not counts.any():
            raise FacecleanError(
                f"the {role} store has no embeddings: nothing to compare", paths[0]
            )
    t_lab, e_lab = np.flatnonzero(tc > 0), np.flatnonzero(ec > 0)
    t_cen = normalise_rows(ts[t_lab]).astype(np.float32)
    e_cen = normalise_rows(es[e_lab]).astype(np.float32)
    index = InnerProductIndex(e_cen, device, backend)
    r, c, s = pairs_above(index, t_cen, tau)
    order = np.lexsort((e_lab[c], t_lab[r], -s))
    r, c, s = r[order], c[order], s[order]
    t_names, e_names = identities(train), identities(evaluation)
    ta, ea = t_lab[r], e_lab[c]
    pairs = pa.table(
        {
            "train_label": pa.array(ta, pa.int64()),
            "train_identity": pa.array([t_names[x] for x in ta.tolist()], pa.string()),
            "eval_label": pa.array(ea, pa.int64()),
            "eval_identity": pa.array([e_names[x] for x in ea.tolist()], pa.string()),
            "cosine": pa.array(s, pa.float32()),
        }
    )
    # The first row of each training label is its best match (rows are best first).
    _, first = np.unique(ta, return_index=True)
    exclude = pairs.take(pa.array(first)).rename_columns(
        ["label", "identity", "eval_label", "eval_identity", "cosine"]
    )
    image_pairs = None
    summary = {
        "train": [str(p) for p in train],
        "eval": [str(p) for p in evaluation],
        "tau": tau,
        "train_classes": int(len(t_lab)),
        "eval_classes": int(len(e_lab)),
        "identity_pairs": pairs.num_rows,
        "train_classes_to_exclude": exclude.num_rows,
        "train_samples_to_exclude": int(tc[exclude["label"].to_numpy()].sum()),
        "search_backend": index.device,
    }
    if image_tau is not None:
        el, ee = unit_rows(evaluation)
        r, c, s, tl = image_pairs_above(train, ee, image_tau)
        order = np.lexsort((c, r, -s))
        r, c, s = r[order], c[order], s[order]
        tr, ec = np.unique(r), np.unique(c)
        tp = dict(zip(tr.tolist(), paths_of(train, tr), strict=True))
        ep = dict(zip(ec.tolist(), paths_of(evaluation, ec), strict=True))
        image_pairs = pa.table(
            {
                "train_path": pa.array([tp[i] for i in r.tolist()], pa.string()),
                "train_label": pa.array(tl[r], pa.int64()),
                "eval_path": pa.array([ep[i] for i in c.tolist()], pa.string()),
                "eval_label": pa.array(el[c], pa.int64()),
                "cosine": pa.array(s, pa.float32()),
            }
        )
        summary |= {"image_tau": image_tau, "image_pairs": image_pairs.num_rows}
    return OverlapResult(pairs, exclude, image_pairs, summary)


def write_overlap(result: OverlapResult, output: str | Path, overwrite: bool = False) -> Path:
    """Write an :class:`OverlapResult` into the folder ``output`` (built aside)."""
    output = Path(output)
    inputs = [*result.summary["train"], *result.summary["eval"]]
    with writing(output, overwrite=overwrite, inputs=inputs, folder=True) as tmp:
        tables = [("identity_pairs.parquet", result.identity_pairs), (EXCLUDE_FILE, result.exclude)]
        if result.image_pairs is not None:
            tables.append(("image_pairs.parquet", result.image_pairs))
        for name, table in tables:
            with atomic_path(tmp / name) as t:
                pq.write_table(table, t)
        (tmp / "summary.json").write_text(json.dumps(result.summary, indent=2))
    return output


def read_exclude(path: str | Path, store_names: dict[int, str] | None = None) -> np.ndarray:
    """Training labels to drop, from an `overlap` folder, its ``exclude.parquet``, or a text
    file of one integer label per line (``#`` comments allowed).

    An ``exclude.parquet`` must have `overlap`'s ``label`` and ``identity`` columns, and with
    ``store_names`` (label -> identity of the store being cleaned) every row's identity must
    be that label's identity there: labels from another label space would drop other people.
    Raises FacecleanError naming the file on anything else (another table, a binary file).
    """
    path = Path(path)
    if path.is_dir():
        path = path / EXCLUDE_FILE
    if not path.is_file():
        raise FacecleanError("no exclude list here (run `faceclean overlap -o` first)", path)
    if path.suffix == ".parquet":
        return _exclude_table(path, store_names)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise FacecleanError(
            "not an exclude list: neither an `overlap` folder or exclude.parquet nor UTF-8 "
            "text of one integer label per line",
            path,
        ) from None
    labels = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#")[0].strip()
        if not line:
            continue
        try:
            labels.append(int(line))
        except ValueError:
            raise FacecleanError(f"line {n}: {line[:40]!r} is not an integer label", path) from None
    return np.unique(np.asarray(labels, np.int64))


def _exclude_table(path: Path, store_names: dict[int, str] | None) -> np.ndarray:
    try:
        table = pq.read_table(path)
    except Exception as e:
        msg = str(e).splitlines()[0][:100]
        raise FacecleanError(f"not a Parquet exclude table ({msg})", path) from None
    missing = {"label", "identity"} - set(table.column_names)
    if missing or not pa.types.is_integer(table.schema.field("label").type):
        raise FacecleanError(
            "not an `overlap` exclude table: it needs an integer 'label' and an 'identity' "
            "column (a plain label list goes in a text file, one label per line)",
            path,
        )
    labels = table["label"].to_numpy(zero_copy_only=False).astype(np.int64)
    if store_names is not None:
        names = table["identity"].to_pylist()
        for label, name in zip(labels.tolist(), names, strict=True):
            if label in store_names and store_names[label] != str(name):
                raise FacecleanError(
                    f"label {label} is {name!r} here but {store_names[label]!r} in the store "
                    "being cleaned: this exclude list comes from another label space; run "
                    "`faceclean overlap` on this store",
                    path,
                )
    return np.unique(labels)
