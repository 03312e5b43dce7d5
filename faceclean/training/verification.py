"""Face verification scores: TAR at FAR on the ROC, the paper's search score, and
InsightFace ``.bin`` pair sets (LFW, CFP-FP, AgeDB-30) with 10-fold accuracy.

TAR@FAR is read off the ROC by linear interpolation between its points. A FAR below
1 / (number of impostor pairs) cannot be resolved: the value is still given (the TAR at a
threshold above every impostor score) but flagged ``resolved = False``.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np

from faceclean.errors import FacecleanError

FARS = (1e-3, 1e-4, 1e-5)


def roc(genuine: np.ndarray, impostor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FAR, TAR) at every distinct threshold, FAR ascending (score > threshold accepts)."""
    scores = np.concatenate([genuine, impostor])
    is_gen = np.concatenate([np.ones(len(genuine), bool), np.zeros(len(impostor), bool)])
    order = np.argsort(-scores, kind="stable")
    s, g = scores[order], is_gen[order]
    tp, fp = np.cumsum(g), np.cumsum(~g)
    last = np.r_[s[1:] != s[:-1], True]  # one point per distinct threshold
    far = np.r_[0.0, fp[last] / max(len(impostor), 1)]
    tar = np.r_[0.0, tp[last] / max(len(genuine), 1)]
    return far, tar


def tar_at_far(genuine: np.ndarray, impostor: np.ndarray, fars=FARS) -> dict:
    """{far: (tar, resolved)} for genuine and impostor similarity scores."""
    if len(genuine) == 0 or len(impostor) == 0:
        raise FacecleanError("verification needs genuine and impostor pairs")
    far, tar = roc(np.asarray(genuine, np.float64), np.asarray(impostor, np.float64))
    # np.interp needs increasing x; keep the highest TAR at each FAR.
    ufar, idx = np.unique(far, return_index=True)
    best = np.maximum.reduceat(tar, idx) if len(idx) else tar
    return {f: (float(np.interp(f, ufar, best)), len(impostor) * f >= 1) for f in fars}


def search_score(tars: dict) -> float:
    """The paper's ACC = 0.5 TAR@1e-3 + 0.25 TAR@1e-4 + 0.25 TAR@1e-5."""
    return 0.5 * tars[1e-3][0] + 0.25 * tars[1e-4][0] + 0.25 * tars[1e-5][0]


def pair_scores(
    embeddings: np.ndarray, labels: np.ndarray, max_pairs: int = 20_000_000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine scores of all (or, past ``max_pairs``, uniformly sampled) pairs of unit
    embeddings: (genuine scores, impostor scores)."""
    n = len(labels)
    if n * (n - 1) // 2 <= max_pairs:
        sims = embeddings @ embeddings.T
        iu = np.triu_indices(n, 1)
        same = labels[iu[0]] == labels[iu[1]]
        s = sims[iu]
        return s[same], s[~same]
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, n, max_pairs), rng.integers(0, n, max_pairs)
    keep = a != b
    a, b = a[keep], b[keep]
    s = np.einsum("nd,nd->n", embeddings[a], embeddings[b])
    same = labels[a] == labels[b]
    # Genuine pairs are rare when sampled uniformly: add every genuine pair of each class.
    order = np.argsort(labels, kind="stable")
    gen = []
    for cls in np.split(order, np.flatnonzero(np.diff(labels[order])) + 1):
        if len(cls) > 1:
            iu = np.triu_indices(len(cls), 1)
            e = embeddings[cls]
            gen.append((e[iu[0]] * e[iu[1]]).sum(1))
    return np.concatenate(gen) if gen else s[same], s[~same]


def evaluate_embeddings(embeddings: np.ndarray, labels: np.ndarray, fars=FARS) -> dict:
    """TAR@FAR over all pairs of a validation set given as identities, and ACC."""
    genuine, impostor = pair_scores(embeddings, labels)
    tars = tar_at_far(genuine, impostor, fars)
    out = {"genuine_pairs": len(genuine), "impostor_pairs": len(impostor)}
    for f, (t, ok) in tars.items():
        out[f"tar@far={f:g}"] = t
        out[f"resolved@far={f:g}"] = ok
    if all(f in tars for f in FARS):
        out["acc"] = search_score(tars)
    return out


# The globals a real InsightFace ``.bin`` needs, and nothing else: bytes pickled by Python 3
# at protocol 2 (``_codecs.encode``), empty bytes and bytearrays, and NumPy arrays or scalars
# (image buffers stored as uint8 arrays, is-same flags as a bool array). An ndarray's
# elements are unpickled through this same filter, so an object array cannot smuggle a
# callable in. MXNet NDArrays, ``os.system``, ``builtins.eval`` ... are refused.
BIN_GLOBALS = frozenset(
    {
        ("_codecs", "encode"),
        ("builtins", "bytes"),
        ("builtins", "bytearray"),
        ("__builtin__", "bytearray"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
    }
)


class _RefusedGlobal(Exception):
    pass


class _BinUnpickler(pickle.Unpickler):
    """Unpickles only the globals in :data:`BIN_GLOBALS`."""

    def find_class(self, module: str, name: str):
        if (module, name) not in BIN_GLOBALS:
            raise _RefusedGlobal(f"{module}.{name}")
        return super().find_class(module, name)


def load_bin(path: str | Path) -> tuple[list[bytes], np.ndarray]:
    """An InsightFace ``.bin``: a pickle of (encoded images, is-same flags), images in
    consecutive pairs. Read with a restricted unpickler (:data:`BIN_GLOBALS`): a file
    that asks for any other Python object is refused with a one-line error naming it and
    the object, and nothing in it is executed."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            bins, issame = _BinUnpickler(f, encoding="bytes").load()
    except _RefusedGlobal as e:
        raise FacecleanError(
            f"refused: the .bin asks to load {e} (not an image/flag pair file, "
            "possibly a crafted one)",
            path,
        ) from None
    except Exception as e:
        raise FacecleanError(
            f"not an InsightFace .bin pair file ({type(e).__name__})", path
        ) from None
    return _checked_pairs(bins, issame, path)


def _checked_pairs(bins, issame, path: Path) -> tuple[list[bytes], np.ndarray]:
    """The unpickled contents as (image bytes, bool flags), or one FacecleanError: a
    crafted file can declare anything (an int for the list, strings for the flags, a
    number where an image should be: ``bytes(5)`` would silently be five zero bytes)."""
    if not isinstance(bins, list | tuple) or not isinstance(issame, list | tuple | np.ndarray):
        raise FacecleanError(
            f"not an InsightFace .bin pair file (it holds {type(bins).__name__} and "
            f"{type(issame).__name__} where a list of images and a list of flags belong)",
            path,
        )
    flags = np.asarray(issame, dtype=object).ravel() if len(issame) else np.zeros(0, bool)
    if len(flags) != len(issame) or not all(
        isinstance(f, bool | np.bool_) or (isinstance(f, int | np.integer) and f in (0, 1))
        for f in flags
    ):
        raise FacecleanError("its is-same flags are not all booleans", path)
    if len(bins) != 2 * len(issame):
        raise FacecleanError(f"{len(bins)} images for {len(issame)} pairs", path)
    images = []
    for i, b in enumerate(bins):
        if isinstance(b, bytes | bytearray):
            images.append(bytes(b))
        elif isinstance(b, np.ndarray) and b.dtype == np.uint8:
            images.append(b.tobytes())
        else:
            raise FacecleanError(f"image entry {i} is a {type(b).__name__}, not bytes", path)
    return images, flags.astype(bool)


def kfold_accuracy(scores: np.ndarray, issame: np.ndarray, folds: int = 10) -> tuple[float, float]:
    """InsightFace's protocol: for each fold, the threshold that maximises accuracy on the
    other folds is applied to it. Returns (mean accuracy, std) over folds. With fewer pairs
    than ``folds`` there is one fold per pair (an empty fold would make the mean NaN)."""
    folds = min(folds, len(scores))
    idx = np.arange(len(scores))
    fold_of = idx * folds // len(scores)
    thresholds = np.unique(scores)
    accs = []
    for k in range(folds):
        train, test = fold_of != k, fold_of == k
        acc_train = [((scores[train] > t) == issame[train]).mean() for t in thresholds]
        t = thresholds[int(np.argmax(acc_train))]
        accs.append(((scores[test] > t) == issame[test]).mean())
    return float(np.mean(accs)), float(np.std(accs))


def evaluate_bin(path: str | Path, embed: Callable[[list[bytes], bool], np.ndarray]) -> dict:
    """10-fold accuracy with flip on a ``.bin`` set; ``embed(images, flip)`` returns
    unit embeddings (flip: image + mirror features summed).

    Returns ``accuracy``, ``std``, ``pairs``, ``genuine``, ``impostor``. A set with no
    impostor (or no genuine) pairs is not embedded and gets ``accuracy`` and ``std`` None:
    any threshold scores 100% there, so a figure would mean nothing."""
    images, issame = load_bin(path)
    genuine, impostor = int(issame.sum()), int((~issame).sum())
    counts = {"pairs": len(issame), "genuine": genuine, "impostor": impostor}
    if not (genuine and impostor):
        return {"accuracy": None, "std": None, **counts}
    e = embed(images, True)
    scores = np.einsum("nd,nd->n", e[0::2], e[1::2])
    acc, std = kfold_accuracy(scores, issame)
    return {"accuracy": acc, "std": std, **counts}
