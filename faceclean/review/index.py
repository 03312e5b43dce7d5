"""The review queues of a clean folder, sorted by doubt and precomputed once.

A page of the review app must load as fast for a million images as for a hundred, so no
request reads a whole table: :func:`open_index` builds, once per clean folder (and again
only when its tables change), ``CLEAN_DIR/.review/`` with one Parquet file per queue,
already in review order and written in row groups of ``ROW_GROUP`` rows; a page reads the
one or two row groups that hold it. The folder is built aside and swapped in whole (see
:mod:`faceclean.outputs`), so a kill during the build leaves no half index.

The queues, most doubtful first:

* ``removals``: the faces the filter dropped (D < tau_intra), by |D - tau_intra|, i.e. the
  removals closest to the threshold first;
* ``borderline``: the kept faces with tau_intra <= D < ``BORDER`` x tau_intra, lowest D
  first (singletons, D = NaN, are not borderline);
* ``merges``: the merged groups, by their weakest link's margin over tau_inter;
* ``duplicates``: the near-duplicate groups of ``--dedup``, those across classes first,
  then by their weakest cosine;
* ``overlap``: the training classes ``--exclude`` dropped as evaluation identities, by
  their cosine's margin over the overlap threshold (see :mod:`.overlap_queue`).

``typical.parquet`` holds, per class, its ``TYPICAL`` most typical faces (highest cos_pos
among the kept ones; all of them for a class the filter emptied): the strips a face is
shown between. It is O(classes) and read into memory when the app starts. The face
queues are built without holding the scores table whole (see :mod:`.face_queues`).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from faceclean.cleaning.clean import CLEAN_FORMAT, read_clean_summary
from faceclean.data.store import atomic_path
from faceclean.errors import FacecleanError
from faceclean.outputs import writing
from faceclean.review.face_queues import face_queues
from faceclean.review.overlap_queue import overlap_folder, overlap_queue

INDEX_FORMAT = 2  # 2: the overlap queue
INDEX_DIR = ".review"
ROW_GROUP = 1000
FACE_KINDS = ("removals", "borderline")
GROUP_KINDS = ("merges", "duplicates", "overlap")
KINDS = FACE_KINDS + GROUP_KINDS
_SOURCES = ("summary.json", "scores.parquet", "merges.parquet", "pairs.parquet", "dedup.parquet")


def check_clean_folder(clean_dir: str | Path) -> dict:
    """The summary of a clean folder this version can read; ``FacecleanError`` for a
    folder that is not a clean output or was written by a newer format."""
    clean_dir = Path(clean_dir)
    summary = read_clean_summary(clean_dir)
    fmt = summary.get("format", 1)
    if not isinstance(fmt, int) or fmt > CLEAN_FORMAT:
        raise FacecleanError(
            f"written by a newer faceclean (clean folder format {fmt}; this version reads "
            f"up to {CLEAN_FORMAT}): upgrade faceclean to review it",
            clean_dir / "summary.json",
        )
    if not (clean_dir / "scores.parquet").is_file():
        raise FacecleanError("not a `faceclean clean` output (no scores.parquet)", clean_dir)
    return summary


def _stamp(clean_dir: Path, summary: dict) -> dict:
    """What the index was built from: size and mtime of each source table."""
    out: dict = {"format": INDEX_FORMAT}
    folder = overlap_folder(summary)
    sources = [clean_dir / n for n in _SOURCES]
    sources += [folder / "identity_pairs.parquet"] if folder else []
    for p in sources:
        name = p.name if p.parent == clean_dir else str(p)
        if p.is_file():
            st = p.stat()
            out[name] = [st.st_size, st.st_mtime_ns]
    return out


def _merge_queue(clean_dir: Path, tau_inter: float, names: dict) -> pa.Table:
    merges = pq.read_table(clean_dir / "merges.parquet")
    pairs = pq.read_table(clean_dir / "pairs.parquet")
    group_of = dict(
        zip(merges["label"].to_pylist(), merges["merged_label"].to_pylist(), strict=True)
    )
    groups: dict[int, dict] = {}
    for m in merges.filter(pc.greater(merges["group_size"], 1)).to_pylist():
        groups.setdefault(m["merged_label"], {"labels": []})["labels"].append(m["label"])
    for p in pairs.filter(pairs["merged"]).to_pylist():
        g = groups.get(group_of.get(p["label_a"]))
        if g is not None:
            g.setdefault("links", []).append((p["label_a"], p["label_b"], p["cosine"]))
    rows = []
    for g in groups.values():
        labels = sorted(g["labels"])
        links = g.get("links", [])
        identities = [names.get(k, str(k)) for k in labels]
        rows.append(
            {
                "key": "merge " + " + ".join(sorted(identities)),
                "labels": labels,
                "identities": identities,
                "link_a": [a for a, _, _ in links],
                "link_b": [b for _, b, _ in links],
                "link_cosine": [c for _, _, c in links],
                "doubt": (min(c for _, _, c in links) if links else 1.0) - tau_inter,
            }
        )
    rows.sort(key=lambda r: (r["doubt"], r["key"]))
    schema = pa.schema(
        [
            ("key", pa.string()),
            ("labels", pa.list_(pa.int64())),
            ("identities", pa.list_(pa.string())),
            ("link_a", pa.list_(pa.int64())),
            ("link_b", pa.list_(pa.int64())),
            ("link_cosine", pa.list_(pa.float32())),
            ("doubt", pa.float32()),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def _duplicate_queue(clean_dir: Path) -> pa.Table:
    schema = pa.schema(
        [
            ("key", pa.string()),
            ("files", pa.list_(pa.string())),
            ("labels", pa.list_(pa.int64())),
            ("identities", pa.list_(pa.string())),
            ("cosines", pa.list_(pa.float32())),
            ("within_class", pa.bool_()),
            ("doubt", pa.float32()),
        ]
    )
    path = clean_dir / "dedup.parquet"
    if not path.is_file():
        return schema.empty_table()
    groups: dict[int, list[dict]] = {}
    for r in pq.read_table(path).to_pylist():
        groups.setdefault(r["group"], []).append(r)
    rows = [
        {
            "key": "duplicates " + " | ".join(sorted(r["path"] for r in g)),
            "files": [r["path"] for r in g],
            "labels": [r["label"] for r in g],
            "identities": [r["identity"] for r in g],
            "cosines": [r["cosine"] for r in g],
            "within_class": bool(g[0]["within_class"]),
            "doubt": min(r["cosine"] for r in g),
        }
        for g in groups.values()
    ]
    rows.sort(key=lambda r: (r["within_class"], r["doubt"], r["key"]))
    return pa.Table.from_pylist(rows, schema=schema)


def build_index(clean_dir: str | Path) -> Path:
    """(Re)build ``CLEAN_DIR/.review`` from the clean folder's tables; returns its path."""
    clean_dir = Path(clean_dir)
    summary = check_clean_folder(clean_dir)
    stamp = _stamp(clean_dir, summary)
    folder = clean_dir / INDEX_DIR
    tables = face_queues(
        clean_dir / "scores.parquet",
        float(summary["tau_intra"]),
        summary.get("embeddings") or [],
    )
    typical = tables["typical"]
    names = dict(zip(typical["label"].to_pylist(), typical["identity"].to_pylist(), strict=True))
    tables["merges"] = _merge_queue(clean_dir, float(summary["tau_inter"]), names)
    tables["duplicates"] = _duplicate_queue(clean_dir)
    tables["overlap"], eval_root = overlap_queue(summary)
    with writing(folder, overwrite=True, folder=True) as tmp:
        for name, table in tables.items():
            pq.write_table(table, tmp / f"{name}.parquet", row_group_size=ROW_GROUP)
        counts = {k: tables[k].num_rows for k in KINDS}
        with atomic_path(tmp / "manifest.json") as part:
            manifest = {"stamp": stamp, "counts": counts, "eval_root": eval_root}
            part.write_text(json.dumps(manifest, indent=2))
    return folder


def _current(clean_dir: Path, summary: dict) -> bool:
    folder = clean_dir / INDEX_DIR
    if not all((folder / f"{k}.parquet").is_file() for k in (*KINDS, "typical")):
        return False
    try:
        return json.loads((folder / "manifest.json").read_text())["stamp"] == _stamp(
            clean_dir, summary
        )
    except (OSError, ValueError, KeyError):
        return False


class ReviewIndex:
    """Read access to the queues of one clean folder (see the module doc)."""

    def __init__(self, clean_dir: str | Path):
        self.clean_dir = Path(clean_dir)
        self.summary = check_clean_folder(self.clean_dir)
        if not _current(self.clean_dir, self.summary):
            build_index(self.clean_dir)
        folder = self.clean_dir / INDEX_DIR
        manifest = json.loads((folder / "manifest.json").read_text())
        self.counts, self.eval_root = manifest["counts"], manifest.get("eval_root")
        self.files = {k: pq.ParquetFile(folder / f"{k}.parquet") for k in KINDS}
        typical = pq.read_table(folder / "typical.parquet")
        labels = typical["label"].to_pylist()
        self.identity = dict(zip(labels, typical["identity"].to_pylist(), strict=True))
        self.faces = dict(zip(labels, typical["faces"].to_pylist(), strict=True))

    @functools.lru_cache(maxsize=64)  # noqa: B019  (one index per app, lives as long)
    def _row_group(self, kind: str, i: int) -> list[dict]:
        return self.files[kind].read_row_group(i).to_pylist()

    def rows(self, kind: str, start: int, stop: int) -> list[dict]:
        """Items ``start`` to ``stop`` (exclusive) of a queue, each a dict of its columns
        with ``position`` added; reads only the row groups that hold them."""
        if kind not in KINDS:
            raise KeyError(kind)
        stop = min(stop, self.counts[kind])
        out = []
        for g in range(start // ROW_GROUP, (max(stop, start + 1) - 1) // ROW_GROUP + 1):
            if start >= stop:
                break
            rows = self._row_group(kind, g)
            lo, hi = max(start - g * ROW_GROUP, 0), min(stop - g * ROW_GROUP, len(rows))
            out += [dict(r, position=g * ROW_GROUP + j) for j, r in enumerate(rows[lo:hi], lo)]
        return out

    def item(self, kind: str, position: int) -> dict | None:
        """One item by its position in its queue, or None past the end."""
        got = self.rows(kind, position, position + 1) if position >= 0 else []
        return got[0] if got else None
