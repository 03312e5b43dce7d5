"""The per-photo record of `faceclean align`: ``<output>.align.parquet`` beside the output.

One row per photo (per crop with ``--pick all``): how many faces were found, which was kept
(box, score, landmarks, roll), the rotation the photo was turned for detection, the crop
written, and the reason when nothing was kept. During a run, finished rows are written in
small atomic parts to ``<output>.align.parquet.partial/`` (a :class:`PartStore`, which
forgets parts made with other settings); at the end the parts and the rows of an earlier
run with the same settings are joined, in dataset order, into the record (temporary name,
renamed). A photo counts as done on a re-run only when it has a row and its crops exist,
so a run killed between writing a crop and its row does that photo again.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from faceclean.data.partstore import PartStore
from faceclean.data.store import atomic_path

SETTINGS_KEY = b"faceclean.align"
SCHEMA = pa.schema(
    [
        ("path", pa.string()),  # the photo, as the dataset names it
        ("identity", pa.string()),
        ("faces_found", pa.int32()),  # detections above the threshold, at `rotation`
        ("rotation", pa.int32()),  # degrees counter-clockwise the photo was turned
        ("crop", pa.string()),  # written crop relative to the output; null: none
        ("score", pa.float32()),
        ("box", pa.list_(pa.float32(), 4)),  # x1, y1, x2, y2, photo pixels
        ("landmarks", pa.list_(pa.float32(), 10)),  # 5 x (x, y), photo pixels, ArcFace order
        ("roll", pa.float32()),  # eye-line angle in the photo, degrees
        ("residual", pa.float32()),  # RMS landmark fit to the template, template pixels
        ("similarity", pa.float32()),  # --pick identity: cosine to the class centroid
        ("reason", pa.string()),  # why nothing was kept (null when a crop was written)
    ]
)
COLUMNS = SCHEMA.names

# The reason of a photo that could not be read (a wrong --root, a file not there yet): not
# done, a re-run tries it again. One read but not an image is done (it stays so).
UNREADABLE = "unreadable: "


def records_path(final: Path) -> Path:
    """``aligned`` -> ``aligned.align.parquet``; ``faces.rec`` -> ``faces.rec.align.parquet``."""
    return final.with_name(final.name + ".align.parquet")


def _fingerprint(settings: dict) -> dict:
    return json.loads(json.dumps(settings))


def _table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist([{c: r.get(c) for c in COLUMNS} for r in rows], schema=SCHEMA)


class RecordLog:
    """Rows of finished photos, kept resumable.

    Args:
        path: the final ``.align.parquet``.
        settings: what the rows depend on (detector, thresholds, pick...): rows of a run
            with other settings are not reused.
        flush_every: rows per part file.
    """

    def __init__(self, path: Path, settings: dict, flush_every: int = 256):
        self.path, self.flush_every = path, flush_every
        self.settings = _fingerprint(settings)
        self.parts = PartStore(path, SCHEMA, self.settings)
        self.pending: list[dict] = []
        self.previous = _by_photo([self._read_previous()])
        self.previous.update(_by_photo(pq.read_table(p) for p in self._part_files()))
        self._next = len(self._part_files())

    def _part_files(self) -> list[Path]:
        return sorted(self.parts.dir.glob("part-*.parquet"))

    def _read_previous(self) -> pa.Table | None:
        if not self.path.exists():
            return None
        try:
            meta = pq.read_schema(self.path).metadata or {}
            same = json.loads(meta.get(SETTINGS_KEY, b"null")) == self.settings
            return pq.read_table(self.path) if same else None
        except (OSError, ValueError, pa.ArrowException):
            return None  # unreadable: its photos are simply done again

    def done(self, path: str, exists) -> bool:
        """Whether photo ``path`` has rows and every crop they name passes ``exists``."""
        rows = self.previous.get(path)
        if not rows or any((r.get("reason") or "").startswith(UNREADABLE) for r in rows):
            return False  # an unreadable photo is tried again (the --root may be fixed)
        return all(r["crop"] is None or exists(r["crop"]) for r in rows)

    def add(self, rows: list[dict]) -> None:
        """Rows of one finished photo (call after its crops are written)."""
        self.pending += rows  # a photo's rows always go into one part together
        if len(self.pending) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.parts.write_chunk(self._next, _table(self.pending))
            self._next += 1
            self.pending = []

    def finish(self, order: list[str]) -> list[dict]:
        """Write the record with one entry per photo in ``order``; returns its rows."""
        self.flush()
        latest = self.previous | _by_photo(pq.read_table(p) for p in self._part_files())
        rows = [r for path in order for r in latest.get(path, [])]
        table = _table(rows).replace_schema_metadata({SETTINGS_KEY: json.dumps(self.settings)})
        with atomic_path(self.path) as tmp:
            pq.write_table(table, tmp)
        shutil.rmtree(self.parts.dir, ignore_errors=True)
        return rows


def _by_photo(tables) -> dict[str, list[dict]]:
    """{photo: its rows}; a photo in a later table replaces its rows of an earlier one (a
    photo done again after a kill), all of its rows at once (--pick all has several)."""
    out: dict[str, list[dict]] = {}
    for table in tables:
        if table is None:
            continue
        here: dict[str, list[dict]] = {}
        for row in table.to_pylist():
            here.setdefault(row["path"], []).append(row)
        out.update(here)
    return out
