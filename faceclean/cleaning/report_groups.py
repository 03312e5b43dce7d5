"""The report's face sections: merged groups, overlap with an evaluation set, duplicates.

Each section shows faces side by side (thumbnails embedded in the HTML as data URIs, so the
report works offline and can be mailed as one file) with the cosines that put them
together: every merged group with its classes' most typical faces and the centroid links
between them; the training classes `faceclean overlap` matched to evaluation classes (when
the clean ran with ``--exclude`` on an overlap folder); the near-duplicate groups of
``--dedup``. Images that cannot be read show as a dark red square.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from faceclean.data.datasets import read_image_bytes
from faceclean.data.preprocess import decode_image
from faceclean.data.store import as_paths, iter_embeddings, read_metadata

SIZE = 72
STYLE = """<style>
body{font-family:sans-serif;margin:1.5em}
.grp{border:1px solid #ccc;border-radius:6px;padding:6px;margin:8px 0}
.row{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}
.card{border:2px solid #4477aa;border-radius:4px;padding:3px;font-size:11px}
.card.bad{border-color:#cc3311}.card.drop{opacity:.45}
.card img{width:72px;height:72px;margin:1px}
.links{font-size:12px;color:#333;margin-top:4px}
.vs{align-self:center;font-weight:bold;font-size:14px;padding:0 6px}
</style>"""


class Thumbs:
    """Data-URI thumbnails of images under one root, each read once."""

    def __init__(self, root: str | Path | None):
        self.root = Path(root) if root else None
        self.cache: dict[str, str] = {}

    def __call__(self, rel: str) -> str:
        if rel not in self.cache:
            try:
                img = decode_image(read_image_bytes(self.root, rel)) if self.root else None
            except (OSError, ValueError):
                img = None
            img = (img or Image.new("RGB", (SIZE, SIZE), (80, 0, 0))).convert("RGB")
            buf = io.BytesIO()
            img.resize((SIZE, SIZE)).save(buf, format="JPEG", quality=80)
            self.cache[rel] = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
        return self.cache[rel]

    def imgs(self, paths: list[str]) -> str:
        return "".join(f"<img src='{self(p)}' title='{html.escape(p, quote=True)}'>" for p in paths)


def _typical(labels: np.ndarray, paths: list[str], score: np.ndarray, k: int) -> dict:
    """label -> up to k paths, highest ``score`` first."""
    order = np.lexsort((-score, labels))
    out: dict[int, list[str]] = {}
    for i in order.tolist():
        lab = int(labels[i])
        if len(out.setdefault(lab, [])) < k:
            out[lab].append(paths[i])
    return out


def _card(title: str, faces: str, cls: str = "") -> str:
    return f"<div class='card {cls}'><div>{html.escape(title)}</div>{faces}</div>"


def merged_groups_html(clean_dir: Path, scores: pa.Table, thumbs: Thumbs, top: int = 20) -> str:
    """Every merged group (largest first, at most ``top``): each class's three most typical
    faces side by side, and the links between the group's classes with their cosines."""
    merges = pq.read_table(clean_dir / "merges.parquet").to_pylist()
    pairs = pq.read_table(clean_dir / "pairs.parquet").to_pylist()
    groups: dict[int, list[int]] = {}
    for m in merges:
        if m["group_size"] > 1:
            groups.setdefault(m["merged_label"], []).append(m["label"])
    if not groups:
        return "<h2>Merged groups</h2><p>No classes were merged.</p>"
    labels = scores["label"].to_numpy()
    cos = np.nan_to_num(scores["cos_pos"].to_numpy(zero_copy_only=False), nan=-2)
    faces = _typical(labels, scores["path"].to_pylist(), cos, 3)
    names = dict(zip(labels.tolist(), scores["identity"].to_pylist(), strict=True))
    ordered = sorted(groups.values(), key=lambda g: (-len(g), min(g)))
    parts = [f"<h2>Merged groups ({len(ordered)}; the {min(top, len(ordered))} largest)</h2>"]
    for g in ordered[:top]:
        inside = set(g)
        links = [p for p in pairs if p["label_a"] in inside and p["label_b"] in inside]
        cards = "".join(
            _card(f"{lab} {names.get(lab, '')}", thumbs.imgs(faces.get(lab, []))) for lab in g
        )
        text = ", ".join(f"{p['label_a']}&ndash;{p['label_b']}: {p['cosine']:.3f}" for p in links)
        parts.append(
            f"<div class='grp'><div class='row'>{cards}</div>"
            f"<div class='links'>centroid links: {text}</div></div>"
        )
    return "\n".join(parts)


def _store_faces(paths, k: int = 3) -> tuple[dict, dict, str | None]:
    """(label -> k paths nearest the class centroid, label -> identity, image root)."""
    rows_p, rows_l, rows_e, names = [], [], [], {}
    for path in as_paths(paths):
        for b in iter_embeddings(path, ("path", "label", "identity", "embedding")):
            rows_p += b["path"].tolist()
            rows_l.append(b["label"])
            rows_e.append(b["embedding"])
            names.update(zip(b["label"].tolist(), map(str, b["identity"]), strict=True))
    labels, emb = np.concatenate(rows_l), np.concatenate(rows_e)
    sums = np.zeros((labels.max() + 1, emb.shape[1]))
    np.add.at(sums, labels, emb)
    score = (emb * sums[labels]).sum(1)
    root = read_metadata(as_paths(paths)[0]).get("dataset")
    return _typical(labels, rows_p, score, k), names, root


def overlap_html(overlap_dir: Path, top: int = 20) -> str:
    """Training classes matched to evaluation classes: faces of both, with the cosine."""
    summary = json.loads((overlap_dir / "summary.json").read_text())
    pairs = pq.read_table(overlap_dir / "identity_pairs.parquet").to_pylist()
    head = (
        f"<h2>Overlap with the evaluation set ({len(pairs)} identity pairs at centroid "
        f"cosine &gt; {summary['tau']}; training classes dropped by --exclude)</h2>"
    )
    if not pairs:
        return head + "<p>None.</p>"
    t_faces, _, t_root = _store_faces(summary["train"])
    e_faces, _, e_root = _store_faces(summary["eval"])
    t_thumbs, e_thumbs = Thumbs(t_root), Thumbs(e_root)
    parts = [head]
    for p in pairs[:top]:
        train = _card(
            f"train {p['train_label']} {p['train_identity']}",
            t_thumbs.imgs(t_faces.get(p["train_label"], [])),
            "bad",
        )
        ev = _card(
            f"eval {p['eval_label']} {p['eval_identity']}",
            e_thumbs.imgs(e_faces.get(p["eval_label"], [])),
        )
        parts.append(
            f"<div class='grp'><div class='row'>{train}<span class='vs'>"
            f"{p['cosine']:.3f}</span>{ev}</div></div>"
        )
    return "\n".join(parts)


def duplicates_html(dedup_path: Path, thumbs: Thumbs, top: int = 20) -> str:
    """Near-duplicate groups: every image with its class; red frame when the group spans
    classes, faded when --dedup-keep left it out."""
    rows = pq.read_table(dedup_path).to_pylist()
    groups: dict[int, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r)
    across = sum(1 for g in groups.values() if not g[0]["within_class"])
    parts = [
        f"<h2>Near-duplicate groups ({len(groups)}, {across} across classes; "
        f"the {min(top, len(groups))} largest)</h2>"
    ]
    for gid in sorted(groups)[:top]:
        g = groups[gid]
        cls = "" if g[0]["within_class"] else "bad"
        cards = "".join(
            _card(
                f"{r['label']} {r['identity']} {r['cosine']:.3f}"
                + ("" if r["keep"] else " (left out)"),
                thumbs.imgs([r["path"]]),
                cls + ("" if r["keep"] else " drop"),
            )
            for r in g
        )
        kind = "within one class" if not cls else "ACROSS CLASSES: label noise"
        parts.append(
            f"<div class='grp'><div class='row'>{cards}</div><div class='links'>{kind}</div></div>"
        )
    return "\n".join(parts)


def face_sections(clean_dir: Path, summary: dict, scores: pa.Table, root) -> list[str]:
    """The HTML sections above, for whatever the clean folder holds."""
    thumbs = Thumbs(root)
    parts = [STYLE, merged_groups_html(clean_dir, scores, thumbs)]
    exclude = summary.get("exclude")
    if exclude and (Path(exclude) / "identity_pairs.parquet").is_file():
        parts.append(overlap_html(Path(exclude)))
    if (clean_dir / "dedup.parquet").is_file():
        parts.append(duplicates_html(clean_dir / "dedup.parquet", thumbs))
    return parts
