"""``faceclean clean --review FILE``: a person's decisions win over the thresholds.

Applied on top of any later clean of the same images (other thresholds, a re-extraction
with another model): faces are matched by path, groups by their identities' names.

* a face decided ``keep`` is kept and one decided ``drop`` is dropped, whatever its D;
* a merged group decided ``split`` is not merged (its classes' links are cut), one decided
  ``accept`` is merged even where tau_inter would no longer link it, and a rejected link
  is cut; the groups are then recomputed (connected components of the remaining links);
* a near-duplicate group decided ``accept`` (copies of one photo) keeps the first image of
  each class and drops the others, unless the person decided on one of them explicitly;
  ``split`` changes nothing; a file of the group dropped on its own is dropped;
* an overlap pair decided ``split`` (two people) keeps its training class, which
  ``--exclude`` would drop; ``accept`` leaves it excluded.

The class sums the merge uses are the thresholds' (a review changes the list training
reads, not the centroids). Faces of the review that the new scores do not hold are
reported (``review_missing_files``), never silently ignored; the summary counts what the
review changed against the thresholds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from faceclean.cleaning.graph import components
from faceclean.cleaning.merge import MergeResult
from faceclean.cleaning.overlap import read_exclude
from faceclean.cleaning.review_file import read_review
from faceclean.data.store import atomic_path
from faceclean.errors import FacecleanError

MISSING_SHOWN = 10


def load_review(path: str | Path) -> tuple[pa.Table, bytes]:
    """The decisions of a review file and its bytes (read before the clean folder that may
    hold it is replaced); a ``FacecleanError`` naming it when it is not a review."""
    path = Path(path)
    if not path.is_file():
        raise FacecleanError("review file not found", path)
    data = path.read_bytes()
    return read_review(path), data


def _face_decisions(review: pa.Table) -> tuple[dict[str, str], set[str]]:
    """path -> keep/drop (explicit face decisions win over duplicate-group ones) and the
    set of explicitly decided paths."""
    rows = review.to_pylist()
    explicit = {  # a face's own decision, from any queue that showed it
        r["file"]: r["decision"]
        for r in rows
        if r["file"] is not None and r["decision"] in ("keep", "drop")
    }
    out: dict[str, str] = {}
    for r in rows:
        if r["kind"] == "duplicates" and r["decision"] == "accept":
            seen: set = set()
            for path, name in zip(r["files"] or [], _per_file(r), strict=True):
                out[path] = "drop" if name in seen else "keep"
                seen.add(name)
    return out | explicit, set(explicit)


def _per_file(row: dict) -> list:
    """The class (identity) of each file of a duplicate group, as the review saw it."""
    ids = row["identities"] or []
    return ids if len(ids) == len(row["files"] or []) else [None] * len(row["files"] or [])


def apply_faces(review: pa.Table, scores_path: Path, num_labels: int) -> tuple[np.ndarray, dict]:
    """Rewrite ``scores_path`` with the person's keep/drop over the threshold's (and a
    ``review`` column: the decision applied, or null); returns the kept count per label
    and the summary counts."""
    decisions, explicit = _face_decisions(review)
    keep_set = pa.array([p for p, d in decisions.items() if d == "keep"], pa.string())
    drop_set = pa.array([p for p, d in decisions.items() if d == "drop"], pa.string())
    counts = np.zeros(num_labels, np.int64)
    found: set[str] = set()
    stats = {"review_kept_against_threshold": 0, "review_dropped_against_threshold": 0}
    pf = pq.ParquetFile(scores_path)
    with atomic_path(scores_path) as tmp:
        writer = None
        for batch in pf.iter_batches(65536):
            t = pa.Table.from_batches([batch])
            keep = t["keep"].to_numpy()
            want_keep = pc.is_in(t["path"], value_set=keep_set).to_numpy(zero_copy_only=False)
            want_drop = pc.is_in(t["path"], value_set=drop_set).to_numpy(zero_copy_only=False)
            new = (keep | want_keep) & ~want_drop
            stats["review_kept_against_threshold"] += int((~keep & new).sum())
            stats["review_dropped_against_threshold"] += int((keep & ~new).sum())
            hit = want_keep | want_drop
            found.update(t["path"].filter(pa.array(hit)).to_pylist())
            review_col = pa.array(np.where(want_keep, "keep", np.where(want_drop, "drop", None)))
            t = t.set_column(t.schema.get_field_index("keep"), "keep", pa.array(new))
            t = t.append_column("review", review_col.cast(pa.string()))
            labels = t["label"].to_numpy()
            counts += np.bincount(labels[new], minlength=num_labels)[:num_labels]
            writer = writer or pq.ParquetWriter(tmp, t.schema, metadata_collector=None)
            writer.write_table(t)
        if writer is not None:
            writer.close()
    missing = sorted(explicit - found)
    stats |= {
        "review_face_decisions": len(explicit),
        "review_missing_files": len(missing),
        "review_missing_examples": missing[:MISSING_SHOWN],
    }
    return counts, stats


def apply_merges(
    review: pa.Table, names: dict[str, int], mr: MergeResult, present: np.ndarray
) -> tuple[MergeResult, dict]:
    """Recompute the merged groups with the person's group decisions over tau_inter's.

    ``names`` maps identity -> label in this clean; ``present`` are the labels with kept
    samples. Returns a MergeResult with the new ``merged_label``/``table``/``groups``."""
    rows = [r for r in review.to_pylist() if r["kind"] == "merges"]
    pairs = mr.pairs.filter(mr.pairs["merged"]) if mr.pairs.num_rows else mr.pairs
    a, b = pairs["label_a"].to_numpy(), pairs["label_b"].to_numpy()
    cut: set[tuple[int, int]] = set()
    extra_a, extra_b, unknown = [], [], 0
    alive = set(present.tolist())
    for r in rows:
        labels = [names[i] for i in r["identities"] or [] if i in names]
        unknown += len(r["identities"] or []) - len(labels)
        labels = [x for x in labels if x in alive]  # a class the filter emptied joins nothing
        if r["decision"] == "reject_link" and r["link_a"] in names and r["link_b"] in names:
            x, y = names[r["link_a"]], names[r["link_b"]]
            cut.add((min(x, y), max(x, y)))
        elif r["decision"] == "split":
            cut.update((min(x, y), max(x, y)) for x in labels for y in labels if x != y)
        elif r["decision"] == "accept":
            extra_a += labels[:-1]
            extra_b += labels[1:]
    keep = np.array([(int(x), int(y)) not in cut for x, y in zip(a, b, strict=True)], bool)
    ea, eb = np.r_[a[keep], extra_a].astype(np.int64), np.r_[b[keep], extra_b].astype(np.int64)
    merged = components(len(mr.merged_label), ea, eb)
    size = np.bincount(merged, minlength=len(merged))
    pa_, pb_ = mr.pairs["label_a"].to_numpy(), mr.pairs["label_b"].to_numpy()
    groups: dict[int, list[int]] = {}
    for lab in present.tolist():
        groups.setdefault(int(merged[lab]), []).append(lab)
    new = MergeResult(
        merged_label=merged,
        table=pa.table(
            {"label": present, "merged_label": merged[present], "group_size": size[merged[present]]}
        ),
        pairs=mr.pairs.set_column(
            mr.pairs.schema.get_field_index("merged"),
            "merged",
            pa.array(merged[pa_] == merged[pb_]),
        ),
        groups=sorted((g for g in groups.values() if len(g) > 1), key=lambda g: (-len(g), g[0])),
        num_split_groups=mr.num_split_groups,
        merged_share=sum(len(g) for g in groups.values() if len(g) > 1) / max(len(present), 1),
        warning=mr.warning,
    )
    changed = int((merged[present] != mr.merged_label[present]).sum())
    return new, {
        "review_group_decisions": len(rows),
        "review_classes_regrouped": changed,
        "review_group_identities_missing": unknown,
    }


def reviewed_exclude(review: pa.Table, exclude, tmp: Path) -> tuple[Path | None, dict]:
    """The exclude list to clean with: ``exclude`` less the training classes of the overlap
    pairs the person split (written as a label file in ``tmp``, which the caller deletes
    once read), and the summary counts."""
    split = {
        r["identities"][0]
        for r in review.to_pylist()
        if r["kind"] == "overlap" and r["decision"] == "split" and r["identities"]
    }
    if not split or exclude is None:
        return exclude, {"review_overlap_split": 0} if split else {}
    pairs_path = Path(exclude) / "identity_pairs.parquet"
    if not pairs_path.is_file():
        raise FacecleanError(
            "the review splits overlap pairs, which needs --exclude to name the `faceclean "
            "overlap` folder (identity names), not a label list",
            exclude,
        )
    pairs = pq.read_table(pairs_path, columns=["train_label", "train_identity"]).to_pylist()
    kept = {p["train_label"] for p in pairs if p["train_identity"] in split}
    labels = [int(x) for x in read_exclude(exclude) if int(x) not in kept]
    listed = tmp / ".exclude-reviewed.txt"
    listed.write_text("".join(f"{x}\n" for x in labels))
    return listed, {"review_overlap_split": len(kept)}
