"""Known noise in, measured cleaning out: `faceclean inject-noise` and `evaluate-cleaning`.

:func:`inject_noise` corrupts a clean embedding store with known noise and returns the
ground truth, one kind per row (``NOISE_KINDS``):

* ``outlier``: whole identities are held out; their samples are given the label of a
  random remaining identity (a face from outside the set filed under an existing name);
* ``split``: half the samples of an identity move to a new label (one person, two labels);
* ``flip``: a sample is relabelled to a random other existing identity;

and the noise real scrapes hold (issue 20):

* ``lookalike``: a sample is filed under the identity whose centroid is most similar to
  its own identity's (a web search for a name returns the people who look like them);
* ``distractor``: faces of people who are not in the set: whole identities are removed
  from the store until their faces make up the asked share of the rows, and each of those
  faces is filed under a random remaining identity;
* ``junk``: embeddings of things that are not faces (hands, cloth, background), appended
  and filed under random identities. They come from ``junk_source``, an embedding store
  of real non-face crops extracted with the same model, because a face model maps
  non-faces somewhere specific (low feature norm, near no identity, see the README), which
  no synthetic model would honestly reproduce;
* ``duplicate``: near-duplicate re-encodes of existing rows, appended with the source's
  label: x' = normalise(x + t u), u a random unit direction orthogonal to x, t set so that
  cos(x, x') = ``duplicate_cosine`` (default 0.97: the median measured with the shared
  MobileFaceNet between celeb_dev crops and the same crops downscaled to 80 px and saved
  again at JPEG quality 60). They are not label noise: a filter should keep them.

:func:`evaluate` scores a cleaning against that truth: precision, recall and F1 of the
removed samples, overall and per noise kind, and pairwise precision/recall of the merges
against the true split pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from faceclean.errors import FacecleanError

NOISE_KINDS = (
    "clean",
    "flip",
    "outlier",
    "split",
    "lookalike",
    "distractor",
    "junk",
    "duplicate",
)
# Rows a cleaning filter should remove; clean, split and duplicate rows carry their true
# identity's label (a split is for merge to undo, a duplicate for dedup).
REMOVABLE_KINDS = ("flip", "outlier", "lookalike", "distractor", "junk")
DUPLICATE_COSINE = 0.97


@dataclass
class NoisyStore:
    table: pa.Table  # the corrupted embedding store (same schema; junk/duplicates appended)
    truth: pa.Table  # path, true_label (-1 for junk), noisy_label, noise


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:  # also refuses NaN
        raise FacecleanError(f"--{name} is a fraction in [0, 1], not {value}")


def _embeddings(table: pa.Table, what: str) -> np.ndarray:
    if "embedding" not in table.column_names:
        raise FacecleanError(f"{what} needs the embedding column, which this table lacks")
    col = table["embedding"].combine_chunks()
    d = col.type.list_size
    x = col.flatten().to_numpy(zero_copy_only=False).astype(np.float64).reshape(-1, d)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 0)


def lookalike_targets(x: np.ndarray, true: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """For every identity k, the identity among ``candidates`` (not k) whose centroid is most
    similar to k's: int64 [K] (centroid = normalised sum of k's unit embeddings)."""
    k = int(true.max()) + 1
    sums = np.zeros((k, x.shape[1]))
    np.add.at(sums, true, x)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    cent = np.divide(sums, norms, out=np.zeros_like(sums), where=norms > 0)
    sims = cent @ cent[candidates].T  # [K, len(candidates)]
    sims[candidates, np.arange(len(candidates))] = -np.inf  # never one's own identity
    return candidates[sims.argmax(1)]


def _fixed_size(values: np.ndarray, like: pa.DataType) -> pa.Array:
    flat = pa.array(values.ravel().astype(np.float32)).cast(like.value_type)
    return pa.FixedSizeListArray.from_arrays(flat, like.list_size)


def _appended(table: pa.Table, source_rows: np.ndarray, paths: list, labels, emb, norms):
    """Rows of ``table``'s schema: columns other than path/label/identity/embedding/norm
    are copied from ``source_rows`` when given, else null."""
    cols = {}
    for field in table.schema:
        name = field.name
        if name == "path":
            cols[name] = pa.array(paths, field.type)
        elif name == "label":
            cols[name] = pa.array(labels, field.type)
        elif name == "identity":
            cols[name] = pa.array([f"id{v}" for v in labels], field.type)
        elif name == "embedding":
            cols[name] = _fixed_size(emb, field.type)
        elif name == "norm" and norms is not None:
            cols[name] = pa.array(norms, pa.float64()).cast(field.type)
        elif source_rows is not None:
            cols[name] = table[name].take(pa.array(source_rows))
        else:
            cols[name] = pa.nulls(len(paths), field.type)
    return pa.table(cols, schema=table.schema)


def _near_duplicates(x: np.ndarray, cosine: float, rng) -> np.ndarray:
    u = rng.standard_normal(x.shape)
    u -= np.einsum("nd,nd->n", u, x)[:, None] * x  # orthogonal to x
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    t = np.sqrt(1.0 / cosine**2 - 1.0)
    return (x + t * u) / np.sqrt(1.0 + t**2)


def inject_noise(
    table: pa.Table,
    flip: float = 0.05,
    outlier: float = 0.05,
    split: float = 0.05,
    seed: int = 0,
    *,
    lookalike: float = 0.0,
    distractors: float = 0.0,
    junk: float = 0.0,
    duplicates: float = 0.0,
    junk_source: pa.Table | None = None,
    duplicate_cosine: float = DUPLICATE_COSINE,
) -> NoisyStore:
    """Corrupt an embedding-store table (in memory).

    Args:
        table: rows with at least ``path`` and ``label`` (labels 0..K-1); ``lookalike``,
            ``junk`` and ``duplicates`` also need ``embedding``.
        flip: fraction of the remaining samples relabelled to a random other identity.
        outlier: fraction of identities held out, their samples filed under others.
        split: fraction of the remaining identities split into two labels (new labels
            K, K+1, ...).
        seed: everything is drawn from ``numpy.random.default_rng(seed)``.
        lookalike: fraction of the store's rows filed under their identity's most similar
            other identity (by centroid), drawn among the rows still clean.
        distractors: share of the store's rows that become faces of removed identities
            (whole identities, in random order, until their rows reach this share).
        junk: non-face rows to append, as a fraction of the store's rows, drawn from
            ``junk_source`` without replacement (a source with fewer rows is an error).
        duplicates: near-duplicate rows to append, as a fraction of the store's rows,
            copies of random clean rows at cosine ``duplicate_cosine`` to their source.
        junk_source: an embedding table of non-face images (same dimension), needed
            when ``junk`` > 0; its ``norm`` column is carried over when both have one.
        duplicate_cosine: cosine of a near duplicate to its source, in (0, 1].

    Returns:
        :class:`NoisyStore`: the corrupted table (appended rows last) and the truth,
        ``path``, ``true_label`` (-1 for junk), ``noisy_label``, ``noise``.
    """
    fractions = {"flip": flip, "outlier": outlier, "split": split, "lookalike": lookalike}
    fractions.update(distractors=distractors, junk=junk, duplicates=duplicates)
    for name, value in fractions.items():
        _check_fraction(name, value)
    if not 0.0 < duplicate_cosine <= 1.0:
        raise FacecleanError(f"the duplicate cosine is in (0, 1], not {duplicate_cosine}")
    if table.num_rows == 0:
        raise FacecleanError("the embedding store is empty: nothing to corrupt")
    if table["label"].null_count:
        row = int(np.argmax(table["label"].is_null().to_numpy(zero_copy_only=False)))
        raise FacecleanError(f"row {row}: label is null")
    rng = np.random.default_rng(seed)
    true = table["label"].to_numpy().astype(np.int64)
    if true.min() < 0 or true.max() > 2 * len(true) + 1024:
        bad = int(true.min() if true.min() < 0 else true.max())
        raise FacecleanError(f"label {bad} is not an id in 0..K-1 with K at most the rows")
    n, k = len(true), int(true.max()) + 1
    noisy = true.copy()
    kind = np.zeros(n, np.int8)  # index into NOISE_KINDS
    ids = rng.permutation(k)
    n_out = int(round(outlier * k))
    held = ids[:n_out]
    # Distractor identities follow the outliers in the permutation until their rows
    # reach the asked share of the store.
    per_id = np.bincount(true, minlength=k)
    want = int(round(distractors * n))
    reach = np.cumsum(per_id[ids[n_out:]])
    n_dis = int(np.searchsorted(reach, want)) + 1 if want else 0
    gone, kept_ids = ids[n_out : n_out + n_dis], ids[n_out + n_dis :]
    if len(kept_ids) < 2 and (n_out or n_dis or flip > 0 or lookalike > 0 or junk > 0):
        raise FacecleanError(
            f"{k} identities, {n_out + n_dis} held out as outliers or distractors: at least "
            "two must remain to file noise under another identity"
        )
    for ids_out, code in ((held, 2), (gone, 5)):
        if code == 5 and not n_dis:
            continue  # draws nothing: seeds give the same noise as before distractors
        rows = np.isin(true, ids_out)
        noisy[rows] = rng.choice(kept_ids, rows.sum())
        kind[rows] = code
    n_split = int(round(split * len(kept_ids)))
    for j, c in enumerate(rng.choice(kept_ids, n_split, replace=False)):
        members = np.flatnonzero((true == c) & (kind == 0))
        moved = rng.choice(members, len(members) // 2, replace=False)
        noisy[moved] = k + j
        kind[moved] = 3
    candidates = np.flatnonzero(kind == 0)
    flipped = rng.choice(candidates, int(round(flip * len(candidates))), replace=False)
    for i in flipped:
        noisy[i] = rng.choice(kept_ids[kept_ids != true[i]])
    kind[flipped] = 1
    x = None
    if lookalike > 0 or duplicates > 0 or junk > 0:
        x = _embeddings(table, "--lookalike, --junk or --duplicates")
    if lookalike > 0:
        candidates = np.flatnonzero(kind == 0)
        count = min(int(round(lookalike * n)), len(candidates))
        chosen = rng.choice(candidates, count, replace=False)
        noisy[chosen] = lookalike_targets(x, true, kept_ids)[true[chosen]]
        kind[chosen] = 4
    extra = []  # appended tables, their truth (true, noisy, kind codes)
    if duplicates > 0:
        source = rng.choice(np.flatnonzero(kind == 0), int(round(duplicates * n)))
        paths = [f"{table['path'][int(i)].as_py()}#dup{j}" for j, i in enumerate(source)]
        norms = table["norm"].to_numpy()[source] if "norm" in table.column_names else None
        emb = _near_duplicates(x[source], duplicate_cosine, rng)
        extra.append(
            (
                _appended(table, source, paths, noisy[source], emb, norms),
                (true[source], noisy[source], np.full(len(source), 7, np.int8)),
            )
        )
    if junk > 0:
        extra.append(_junk_rows(table, junk_source, int(round(junk * n)), kept_ids, rng))
    identity = pa.array([f"id{v}" for v in noisy])
    out = table.set_column(table.schema.get_field_index("label"), "label", pa.array(noisy))
    if "identity" in out.column_names:
        out = out.set_column(out.schema.get_field_index("identity"), "identity", identity)
    if extra:
        out = pa.concat_tables([out, *(t for t, _ in extra)])
        true = np.concatenate([true, *(tr for _, (tr, _, _) in extra)])
        noisy = np.concatenate([noisy, *(no for _, (_, no, _) in extra)])
        kind = np.concatenate([kind, *(kd for _, (_, _, kd) in extra)])
    truth = pa.table(
        {
            "path": out["path"],
            "true_label": pa.array(true),
            "noisy_label": pa.array(noisy),
            "noise": pa.array([NOISE_KINDS[v] for v in kind]),
        }
    )
    return NoisyStore(out, truth)


def _junk_rows(table: pa.Table, source: pa.Table | None, count: int, kept_ids, rng):
    if source is None or source.num_rows == 0:
        raise FacecleanError(
            "--junk needs embeddings of non-face images (--junk-source): extract a folder "
            "of non-face crops with the same model"
        )
    emb = _embeddings(source, "the junk source")
    dim = table.schema.field("embedding").type.list_size
    if emb.shape[1] != dim:
        raise FacecleanError(
            f"the junk source's embeddings have dimension {emb.shape[1]}, the store's {dim}"
        )
    if count > len(emb):
        # Re-used vectors would be exact copies of each other under random labels: cosine-1
        # duplicates any --dedup finds, not other non-faces, so the junk measured would not
        # be the junk asked for.
        raise FacecleanError(
            f"--junk asks for {count:,} non-face rows but the junk source has {len(emb):,}: "
            f"give a larger source or --junk at most {len(emb) / table.num_rows:.4g}"
        )
    picks = rng.permutation(len(emb))[:count]
    names = source["path"].to_pylist() if "path" in source.column_names else None
    paths = [f"junk:{names[p] if names else p}" for p in picks.tolist()]
    labels = rng.choice(kept_ids, count)
    has_norm = "norm" in source.column_names and "norm" in table.column_names
    norms = source["norm"].to_numpy()[picks] if has_norm else None
    rows = _appended(table, None, paths, labels, emb[picks], norms)
    return rows, (np.full(count, -1, np.int64), labels, np.full(count, 6, np.int8))


def _prf(tp: int, predicted: int, actual: int) -> tuple[float, float, float]:
    p = tp / predicted if predicted else 1.0
    r = tp / actual if actual else 1.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def evaluate(
    keep: np.ndarray,
    noise: np.ndarray,
    merged_label: np.ndarray | None = None,
    truth_split_pairs: set[tuple[int, int]] | None = None,
) -> dict:
    """Cleaning quality against the truth.

    Args:
        keep: bool [N], the filter's decision, rows aligned with ``noise``.
        noise: str [N], one of NOISE_KINDS per row.
        merged_label: int [K'], each noisy label's group representative (from merge).
        truth_split_pairs: {(a, b)} noisy label pairs that are really one identity.

    Returns:
        dict: ``removed``, ``noisy`` (rows of REMOVABLE_KINDS), removal precision/recall/F1
        over all of them, ``clean_removed_fraction`` (rows of the other kinds removed);
        for each removable kind present, ``recall_<kind>`` and ``precision_<kind>``,
        ``f1_<kind>``: the precision the filter would have if that kind were the only
        noise (its removed rows against those plus the wrongly removed non-noise rows);
        for each kept kind present (split, duplicate), ``removed_<kind>``, the share
        wrongly removed; ``recall_flip`` and ``recall_outlier`` always (NaN if absent).
        With merges: merge pairwise precision/recall/F1.
    """
    removed = ~np.asarray(keep, bool)
    noise = np.asarray(noise)
    bad = np.isin(noise, REMOVABLE_KINDS)
    p, r, f = _prf(int((removed & bad).sum()), int(removed.sum()), int(bad.sum()))
    out = {
        "removed": int(removed.sum()),
        "noisy": int(bad.sum()),
        "removal_precision": p,
        "removal_recall": r,
        "removal_f1": f,
    }
    false_removed = int((removed & ~bad).sum())
    for kind in REMOVABLE_KINDS:
        m = noise == kind
        if not m.any():
            if kind in ("flip", "outlier"):
                out[f"recall_{kind}"] = float("nan")
            continue
        tp = int(removed[m].sum())
        kp, kr, kf = _prf(tp, tp + false_removed, int(m.sum()))
        out.update({f"recall_{kind}": kr, f"precision_{kind}": kp, f"f1_{kind}": kf})
    for kind in ("split", "duplicate"):
        m = noise == kind
        if m.any():
            out[f"removed_{kind}"] = float(removed[m].mean())
    out["clean_removed_fraction"] = float(removed[~bad].mean()) if (~bad).any() else 0.0
    if merged_label is not None and truth_split_pairs is not None:
        groups: dict[int, list[int]] = {}
        for label, rep in enumerate(merged_label):
            groups.setdefault(int(rep), []).append(label)
        predicted = {(a, b) for g in groups.values() for i, a in enumerate(g) for b in g[i + 1 :]}
        tp = len(predicted & truth_split_pairs)
        mp, mr, mf = _prf(tp, len(predicted), len(truth_split_pairs))
        out.update(merge_pairs=len(predicted), merge_precision=mp, merge_recall=mr, merge_f1=mf)
    return out


def split_pairs(truth: pa.Table) -> set[tuple[int, int]]:
    """The (original label, split label) pairs of a truth table."""
    t = truth.filter(pa.compute.equal(truth["noise"], "split"))
    return {
        (min(a, b), max(a, b))
        for a, b in zip(t["true_label"].to_pylist(), t["noisy_label"].to_pylist(), strict=True)
    }
