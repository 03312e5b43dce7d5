"""The review file, ``CLEAN_DIR/review.parquet``: a person's decisions on a clean.

Written by `faceclean review` (:mod:`faceclean.review.store`), read by
`faceclean clean --review` (:mod:`.review_apply`).

One row per decided item, the latest decision for it: ``key`` (the item: a face's path, or
a group named by its identities), ``kind`` (``removals``, ``borderline``, ``merges``,
``duplicates``, ``overlap``), ``decision``, ``file`` (the face's path; null for a group),
``files`` and ``identities`` (a group's members), ``label``, the scores the item was shown
with (``discriminability``, ``cos_pos``, ``cos_neg``, ``norm`` for a face; ``cosine``, the
weakest link, for a group), ``link_a``/``link_b`` (the identities of a rejected link) and
``time`` (UTC). Decisions:

* a face: ``keep`` or ``drop``;
* a merged group: ``accept`` (one identity), ``split`` (every class its own) or
  ``reject_link`` (one decision per rejected link; its key names the link);
* a duplicate group: ``accept`` (copies of one photo: keep one per class) or ``split``
  (different photos: keep them all); one of its files can also be dropped on its own
  (``drop``, keyed by its path: which class a photo filed under two people belongs to);
* an overlap pair (a training class matched to an evaluation class): ``accept`` (one
  person: the training class stays excluded) or ``split`` (two people: keep it);
  ``identities`` holds the training identity, then the evaluation one.

Every change rewrites the file under a temporary name and renames it (one click, one
atomic write of a few KB per thousand decisions), so a kill or a closed browser loses
nothing. Groups are named by identity strings and faces by path, not by label numbers, so
a review applies to a later clean of the same images (other thresholds, another model).
The file records its format; a newer one is refused rather than rewritten.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from faceclean.errors import FacecleanError

REVIEW_FORMAT = 1
REVIEW_FILE = "review.parquet"
_FORMAT_KEY = b"faceclean_review_format"
DECISIONS = {
    "removals": ("keep", "drop"),
    "borderline": ("keep", "drop"),
    "merges": ("accept", "split", "reject_link"),
    "duplicates": ("accept", "split", "drop"),
    "overlap": ("accept", "split"),
}
SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("kind", pa.string()),
        ("decision", pa.string()),
        ("file", pa.string()),
        ("files", pa.list_(pa.string())),
        ("identities", pa.list_(pa.string())),
        ("label", pa.int64()),
        ("discriminability", pa.float32()),
        ("cos_pos", pa.float32()),
        ("cos_neg", pa.float32()),
        ("norm", pa.float32()),
        ("cosine", pa.float32()),
        ("link_a", pa.string()),
        ("link_b", pa.string()),
        ("time", pa.timestamp("ms", tz="UTC")),
    ],
    metadata={_FORMAT_KEY: str(REVIEW_FORMAT).encode()},
)


def read_review(path: str | Path) -> pa.Table:
    """The decisions in a review file (an empty table if it does not exist); a file that
    is not a review, or was written by a newer format, is a ``FacecleanError``."""
    path = Path(path)
    if not path.exists():
        return SCHEMA.empty_table()
    try:
        table = pq.read_table(path)
    except Exception as e:
        raise FacecleanError(f"not a Parquet file ({str(e).splitlines()[0][:100]})", path) from None
    meta = table.schema.metadata or {}
    if _FORMAT_KEY not in meta:
        raise FacecleanError("not a `faceclean review` file (no review format recorded)", path)
    try:
        fmt = int(meta[_FORMAT_KEY])
    except ValueError:
        raise FacecleanError(
            f"not a `faceclean review` file (its format tag is {meta[_FORMAT_KEY][:20]!r})", path
        ) from None
    if fmt > REVIEW_FORMAT:
        raise FacecleanError(
            f"written by a newer faceclean (review format {fmt}; this version reads up to "
            f"{REVIEW_FORMAT}): upgrade faceclean",
            path,
        )
    missing = [f.name for f in SCHEMA if f.name not in table.schema.names]
    if missing:
        raise FacecleanError(f"review file lacks column(s) {', '.join(missing)}", path)
    try:  # a file can declare any type: the applying code trusts these
        table = table.select(SCHEMA.names).cast(SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
        msg = str(e).splitlines()[0][:100]
        raise FacecleanError(f"review file has columns of the wrong type ({msg})", path) from None
    pairs = zip(table["kind"].to_pylist(), table["decision"].to_pylist(), strict=True)
    for kind, decision in set(pairs):
        if kind not in DECISIONS or (decision is not None and decision not in DECISIONS[kind]):
            raise FacecleanError(
                f"review file holds decision {decision!r} for {kind!r}, which no review "
                f"makes (kinds and decisions: {DECISIONS})",
                path,
            )
    for kind, file, key in zip(
        table["kind"].to_pylist(), table["file"].to_pylist(), table["key"].to_pylist(), strict=True
    ):
        if kind in ("removals", "borderline") and file is None:
            # Applying it would skip it without a word: the decision names no face.
            raise FacecleanError(
                f"review file holds a {kind} decision ({str(key)[:80]!r}) that names no file",
                path,
            )
    return table.replace_schema_metadata(meta)
