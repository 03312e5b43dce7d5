"""The review queue of a clean's overlap with an evaluation set (``clean --exclude`` of a
`faceclean overlap` folder): each training class matched to an evaluation class, with a
few faces of each, the pair closest to the overlap threshold first.

The training classes were dropped before the clean, so their faces are read from the
training store (paths and labels only, streamed); the evaluation faces from the
evaluation store, under that store's own image root.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from faceclean.data.store import read_metadata

FACES = 4
SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("train_label", pa.int64()),
        ("train_identity", pa.string()),
        ("eval_label", pa.int64()),
        ("eval_identity", pa.string()),
        ("cosine", pa.float32()),
        ("doubt", pa.float32()),
        ("train_faces", pa.list_(pa.string())),
        ("eval_faces", pa.list_(pa.string())),
    ]
)


def first_faces(stores: list[str], labels: set[int], k: int = FACES) -> dict[int, list[str]]:
    """label -> its first ``k`` paths (store order), for the given labels only."""
    out: dict[int, list[str]] = {}
    for store in stores:
        for batch in pq.ParquetFile(store).iter_batches(65536, columns=["path", "label"]):
            for p, lab in zip(batch["path"].to_pylist(), batch["label"].to_pylist(), strict=True):
                if lab in labels and len(out.setdefault(lab, [])) < k:
                    out[lab].append(p)
    return out


def overlap_folder(summary: dict) -> Path | None:
    """The `faceclean overlap` folder a clean excluded, if it was one and still exists."""
    exclude = summary.get("exclude")
    if exclude and (Path(exclude) / "identity_pairs.parquet").is_file():
        return Path(exclude)
    return None


def overlap_queue(summary: dict) -> tuple[pa.Table, str | None]:
    """(the queue, the evaluation images' root) of a clean's summary; empty without an
    overlap folder."""
    folder = overlap_folder(summary)
    if folder is None:
        return SCHEMA.empty_table(), None
    info = json.loads((folder / "summary.json").read_text())
    pairs = pq.read_table(folder / "identity_pairs.parquet").to_pylist()
    train = first_faces(info["train"], {p["train_label"] for p in pairs})
    ev = first_faces(info["eval"], {p["eval_label"] for p in pairs})
    rows = [
        p
        | {
            "key": f"overlap {p['train_identity']} = {p['eval_identity']}",
            "doubt": p["cosine"] - float(info["tau"]),
            "train_faces": train.get(p["train_label"], []),
            "eval_faces": ev.get(p["eval_label"], []),
        }
        for p in pairs
    ]
    rows.sort(key=lambda r: (r["doubt"], r["key"]))
    root = read_metadata(info["eval"][0]).get("dataset") if info["eval"] else None
    return pa.Table.from_pylist(rows, schema=SCHEMA), root
