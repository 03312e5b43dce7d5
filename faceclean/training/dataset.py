"""What training reads: a clean list (Parquet, ``path label`` lines or a ``.rec``) and the
dataset that decodes, augments and normalises its images for the loop."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import Dataset

from faceclean.data.datasets import open_dataset, read_image_bytes
from faceclean.data.preprocess import Preprocessing, load_pixels, normalise
from faceclean.data.store import read_parquet_columns
from faceclean.errors import FacecleanError


def _recorded_root(clean_list: Path) -> Path | None:
    """The image root `faceclean clean` recorded beside its list (the dataset the
    embeddings were extracted from), so that ``train`` needs no ``--data`` after ``clean``."""
    summary = clean_list.parent / "summary.json"
    try:
        root = json.loads(summary.read_text()).get("dataset")
    except (OSError, ValueError, AttributeError):
        return None
    return Path(root) if root and Path(root).is_dir() else None


def read_clean_list(path: str | Path, data_root: str | Path | None = None):
    """(paths, labels int64, image root) from a clean list: Parquet with ``path``/``label``,
    ``path label`` lines, a .rec, or an image folder."""
    path = Path(path)
    if not path.exists():
        raise FacecleanError("clean list not found", path)
    if path.suffix == ".parquet":
        table = read_parquet_columns(path, {"path": pa.string(), "label": pa.int64()}, "clean list")
        paths, labels = table["path"].to_pylist(), table["label"].to_numpy().astype(np.int64)
        root = Path(data_root) if data_root else _recorded_root(path) or path.parent
    elif path.suffix in (".lst", ".txt"):
        # Keep the labels as written: a clean list's labels are already the training ids.
        paths, labels = [], []
        with open(path) as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                p, _, lab = line.strip().rpartition("\t" if "\t" in line else " ")
                try:
                    labels.append(int(lab))
                except ValueError:
                    raise FacecleanError(
                        f"line {lineno}: label {lab!r} is not an integer", path
                    ) from None
                paths.append(p)
        labels = np.asarray(labels, np.int64)
        root = Path(data_root) if data_root else _recorded_root(path) or path.parent
    else:
        ds = open_dataset(path, data_root)
        paths, labels, root = ds.paths.to_pylist(), ds.labels, ds.root
    if len(paths) == 0:
        raise FacecleanError("the clean list is empty", path)
    if labels.min() < 0:
        raise FacecleanError(f"label {labels.min()} is negative", path)
    return paths, labels, root


class FaceImages(Dataset):
    """(image tensor [3, S, S], label) pairs; training flips are seeded per sample."""

    def __init__(self, paths, labels, root, spec: Preprocessing, train: bool, seed: int = 0):
        self.paths, self.labels, self.root, self.spec = paths, labels, Path(root), spec
        self.train, self.seed, self.epoch = train, seed, 0

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            pixels, _ = load_pixels(read_image_bytes(self.root, self.paths[i]), self.spec)
        except Exception as e:
            if self.train:  # skipped and counted by the loop (SkippedImages), not a crash
                blank = torch.zeros(3, self.spec.height, self.spec.width)
                return blank, -1 - i
            raise FacecleanError(
                f"cannot read training image: {e}", self.root / self.paths[i]
            ) from None
        if self.train and np.random.default_rng((self.seed, self.epoch, i)).random() < 0.5:
            pixels = pixels[:, ::-1]
        x = normalise(np.ascontiguousarray(pixels)[None], self.spec)[0]
        return torch.from_numpy(x), int(self.labels[i])
