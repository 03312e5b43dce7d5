"""`faceclean align`: raw photos -> ArcFace-aligned 112x112 face crops, and a record of each.

Each image is decoded, its faces found by a five-landmark ONNX detector
(:mod:`faceclean.data.detectors`), the detections that are not plausibly faces dropped and
photos with none looked at again turned by 90/180/270 degrees
(:mod:`faceclean.data.align_checks`), one face picked, and warped onto the ArcFace
five-point template (:mod:`faceclean.data.align_warp`). The crops are written in the layout
that was read: ``RAW/<identity>/<image>`` becomes ``ALIGNED/<identity>/<image>``, a list
file gets a copy with the same lines under the output folder, a ``.rec`` becomes an image
folder ``ALIGNED/<identity>/<key>.png``; an output named ``*.rec`` is an InsightFace
``.rec``/``.idx`` of JPEG crops (gathered in ``<output>.partial/`` first, so it resumes too).
What happened to each photo goes into ``<output>.align.parquet``
(:mod:`faceclean.data.align_records`).

A worker pool decodes, detects, warps and writes image by image (PIL, NumPy and
onnxruntime release the GIL). Every crop is written under a temporary name and renamed, so a
killed run started again skips every photo that has its record row and its crops.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from faceclean.data.align_identity import CropEmbedder, choose_by_identity
from faceclean.data.align_photo import PICKS, Options, align_photo, pick_faces, save, suffixed
from faceclean.data.align_records import RecordLog, records_path
from faceclean.data.align_warp import (
    ARCFACE_TEMPLATE,
    affine_warp,
    apply_transform,
    refine_landmarks,
    similarity_transform,
    warp,
)
from faceclean.data.datasets import FaceDataset, open_dataset
from faceclean.data.detectors import FaceDetector
from faceclean.data.parallel import ordered_map
from faceclean.data.recordio import write_face_rec
from faceclean.data.store import atomic_path
from faceclean.errors import FacecleanError
from faceclean.outputs import remove_stale_inside
from faceclean.progress import RowProgress

__all__ = [
    "ARCFACE_TEMPLATE",
    "PICKS",
    "AlignResult",
    "affine_warp",
    "align",
    "apply_transform",
    "pick_faces",
    "refine_landmarks",
    "similarity_transform",
    "warp",
]


@dataclass
class AlignResult:
    """What a run of :func:`align` did. Counts cover every photo of the dataset, those done
    by an earlier run included, except ``residuals`` (this run's crops only)."""

    output: Path
    num_images: int
    num_resumed: int
    num_faces: int
    num_failed: int
    failures: list[tuple[str, str, str]]  # (photo, identity, reason)
    failures_path: Path | None
    list_path: Path | None
    detector: str
    providers: list[str]
    seconds: float
    records_path: Path | None = None
    num_rotated: int = 0  # photos whose face was found turned by 90/180/270 degrees
    num_rejected: int = 0  # photos with detections, none of them plausible
    num_chosen: int = 0  # --pick identity: photos with several faces, one chosen
    residuals: list[float] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def median_residual(self) -> float:
        """Median RMS distance (template pixels) between fitted landmarks and the template."""
        return float(np.median(self.residuals)) if self.residuals else float("nan")

    @property
    def images_per_second(self) -> float:
        done = self.num_images - self.num_resumed
        return done / self.seconds if self.seconds > 0 else float("nan")


def output_relpath(ds: FaceDataset, i: int) -> str:
    """Where sample ``i``'s crop goes, relative to the output folder."""
    path = ds.path(i)
    if ds.kind == "rec":  # "train.rec#17" -> "<identity>/17.png"
        return f"{ds.identities[ds.labels[i]]}/{path.rpartition('#')[2]}.png"
    p = Path(path)
    if p.is_absolute() or ".." in p.parts:  # keep every crop inside the output folder
        return f"{ds.identities[ds.labels[i]]}/{p.name}"
    return path


def unique_relpaths(rels: list[str]) -> list[str]:
    """``rels`` with each repeat made distinct (``x.jpg``, ``x~2.jpg``, ``x~3.jpg``, in
    order): photos of one name from different folders (a list of absolute paths, or
    ``.png`` and ``.jpg`` of one stem packed as JPEG into a ``.rec``) would otherwise be
    written to one crop, each over the last, and listed several times."""
    taken = set(rels)
    seen: set[str] = set()
    out = []
    for rel in rels:
        if rel in seen:
            stem, ext = os.path.splitext(rel)
            k = 2
            while f"{stem}~{k}{ext}" in taken:
                k += 1
            rel = f"{stem}~{k}{ext}"
            taken.add(rel)
        seen.add(rel)
        out.append(rel)
    return out


def align(
    source: str | Path,
    output: str | Path,
    detector: str | Path | FaceDetector,
    *,
    root: str | Path | None = None,
    pick: str = "largest",
    min_size: float = 0.0,
    min_score: float = 0.6,
    refine: bool = True,
    check: bool = True,
    rotate: bool = True,
    embedder: str | Path | CropEmbedder | None = None,
    preset: str | None = None,
    size: int = 112,
    max_side: int = 640,
    workers: int = 2,
    device: str = "auto",
    progress: bool = False,
) -> AlignResult:
    """Detect, check, align and write the face crops of a dataset, with a record per photo.

    Args:
        source: an image folder, a ``path label`` list file or a ``.rec``.
        output: the folder to write the crops into (made if missing), or a ``.rec`` path.
        detector: an ONNX YuNet or SCRFD model path, or a loaded FaceDetector.
        root: folder the paths of a list file are relative to.
        pick: among the plausible faces of a photo: "largest", "central" (box centre
            nearest the image centre), "identity" (the one nearest its class: see
            :mod:`faceclean.data.align_identity`; needs ``embedder``) or "all" (every face,
            written as ``<stem>_1``, ``<stem>_2``, ... largest first).
        min_size: faces whose box is smaller than this many pixels on its shorter side are
            ignored. min_score: score floor of a kept face (0..1).
        refine: find the landmarks again on the face warped upright
            (:func:`refine_landmarks`; one more, small, detector call per face).
        check: drop detections whose landmarks do not have a face's geometry
            (:func:`faceclean.data.align_checks.implausible`).
        rotate: look again at photos with no plausible face turned by 90, 180, 270 degrees.
        embedder: for pick "identity": an ONNX face model path (with ``preset`` unless it
            records its preprocessing) or a CropEmbedder.
        size: side of the square crop in pixels (the template is scaled by size/112).
        max_side: images are shrunk to at most this longer side for detection only.
        workers: images processed at once. device: "auto", "cpu" or "cuda".
        progress: show a progress bar with the rate on stderr.

    Returns:
        An :class:`AlignResult`. ``<output>.align.parquet`` beside the output has a row per
        photo (per crop with "all"); photos with no face kept (or that fail to decode) are
        also listed in ``<output>.failures.tsv``; a list-file input gets
        ``<output>/<list name>`` with the paths of the crops.
    """
    t0 = time.perf_counter()
    if pick not in PICKS:
        raise FacecleanError(f"--pick must be one of {', '.join(PICKS)}, not {pick!r}")
    if workers < 1:
        raise FacecleanError("workers must be at least 1")
    if pick == "identity" and embedder is None:
        raise FacecleanError("--pick identity needs a face model to compare faces (--embedder)")
    source, out_root = Path(source), Path(output)
    ds = open_dataset(source, root)
    rec = out_root.suffix == ".rec"
    if rec:  # crops gather in a resumable folder, packed into the .rec at the end
        rec_path, out_root = out_root, out_root.with_name(out_root.name + ".partial")
        if rec_path.exists():
            raise FacecleanError("output .rec already exists; remove it first", rec_path)

    rels = unique_relpaths(
        [
            os.path.splitext(r)[0] + ".jpg" if rec else r
            for r in (output_relpath(ds, i) for i in range(len(ds)))
        ]
    )

    def rel_of(i: int) -> str:
        return rels[i]

    src_root, dst = Path(ds.root).resolve(), out_root.resolve()
    if dst == src_root or (ds.kind == "folder" and src_root in dst.parents):
        # Crops inside the input folder would be read as an identity on the next run.
        raise FacecleanError("the output folder is in the input folder; choose another", out_root)
    if out_root.exists() and not out_root.is_dir():
        raise FacecleanError("output exists and is not a folder", out_root)
    threads = max(1, (os.cpu_count() or 1) // workers)
    if isinstance(detector, FaceDetector):
        det = detector
    else:
        det = FaceDetector(detector, device=device, max_side=max_side, threads=threads)
    if pick == "identity" and not isinstance(embedder, CropEmbedder):
        embedder = CropEmbedder(embedder, device=device, preset=preset, threads=threads)
    opts = Options(pick, min_size, min_score, size, refine, check, rotate)
    final = rec_path if rec else out_root
    settings = {
        **opts.__dict__,
        "detector": f"{det.path.name} {det.max_side}",
        "embedder": str(embedder.model.path.name) if pick == "identity" else None,
        # Which photos: another DATA (or --root) into the same output must not resume on
        # crops of other photos that happen to share names.
        "source": str(source.resolve()),
        "root": str(Path(ds.root).resolve()),
    }
    out_root.mkdir(parents=True, exist_ok=True)
    # A killed run leaves its half-written crop as .NAME.tmp-PID beside the crop: remove
    # those of dead writers, in every identity folder (the crops themselves are resumed).
    remove_stale_inside(out_root, recursive=True)
    log = RecordLog(records_path(final), settings)
    n = len(ds)
    todo = [i for i in range(n) if not log.done(ds.path(i), lambda r: (out_root / r).exists())]
    resumed = n - len(todo)
    residuals: list[float] = []
    pending, first = {}, {}
    bar = RowProgress(progress, "align", n, resumed, unit="img")

    def align_one(i: int):
        ident = ds.identities[ds.labels[i]]
        return align_photo(
            lambda: ds.read(i), ds.path(i), ident, rel_of(i), out_root, det, opts, embedder
        )

    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="align") as pool:
            for i, res in ordered_map(pool, align_one, todo, 4 * workers):
                if res.pending is not None:
                    pending[i] = res.pending
                else:
                    log.add(res.rows)
                if res.embedding is not None or res.pending is not None:
                    first[i] = res.embedding if res.pending is None else res.pending.embeddings[0]
                residuals += res.residuals
                bar.advance(1)
        if pending:
            resumed_ids = sorted(set(range(n)) - set(todo))
            residuals += _choose(ds, pending, first, resumed_ids, log, out_root, embedder, rel_of)
    finally:
        bar.close()
        log.flush()
    rows = log.finish([ds.path(i) for i in range(n)])
    failures = [(r["path"], r["identity"], r["reason"]) for r in rows if r["crop"] is None]
    failures_path = final.with_name(final.name + ".failures.tsv")
    if failures:
        with atomic_path(failures_path) as tmp, open(tmp, "w") as f:
            f.write("path\tlabel\terror\n")
            f.writelines(f"{p}\t{lab}\t{msg}\n" for p, lab, msg in failures)
    else:
        failures_path.unlink(missing_ok=True)
    paths = [ds.path(i) for i in range(n)]
    crops = _crops(out_root, rows, paths, [rel_of(i) for i in range(n)])
    if n and not any(crops):
        _nothing_aligned(n, failures, failures_path, out_root, final)
    list_path = None
    if rec:
        order = sorted(range(n), key=lambda i: ds.labels[i])  # a .rec wants labels grouped
        # A list file's integer labels are kept; identity folder names become 0..K-1.
        # Written integers only where each name is one integer's own spelling: "7" and "07"
        # would both become label 7, two people filed as one.
        numeric = all(s.lstrip("-").isdigit() and str(int(s)) == s for s in ds.identities)
        numeric = numeric and len({int(s) for s in ds.identities}) == len(ds.identities)
        label = [int(s) for s in ds.identities] if numeric else list(range(ds.num_classes))
        items = (
            (label[ds.labels[i]], (out_root / r).read_bytes()) for i in order for r in crops[i]
        )
        try:
            write_face_rec(rec_path, items)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise FacecleanError(
                f"{e.strerror} while packing the crops; they are kept in {out_root}, and the "
                "same command resumes from them once there is space",
                rec_path,
            ) from None
        shutil.rmtree(out_root)
    elif ds.kind == "list":
        list_path = _write_list(ds, out_root, source.name, crops)
    kept = [r for r in rows if r["crop"] is not None]
    return AlignResult(
        output=final,
        num_images=n,
        num_resumed=resumed,
        num_faces=sum(map(len, crops)),
        num_failed=len(failures),
        failures=failures,
        failures_path=failures_path if failures else None,
        list_path=list_path,
        detector=det.kind,
        providers=det.providers,
        seconds=time.perf_counter() - t0,
        records_path=log.path,
        num_rotated=len({r["path"] for r in kept if r["rotation"]}),
        num_rejected=sum(1 for r in rows if (r["reason"] or "").startswith("no plausible")),
        num_chosen=sum(1 for r in kept if r["similarity"] is not None),
        residuals=residuals,
        warnings=list(ds.warnings),
    )


def _choose(ds, pending, first, resumed, log, out_root: Path, embedder, rel_of) -> list[float]:
    """--pick identity's second pass: write the chosen crop of each photo in ``pending``
    (returns their fit residuals). Photos done by an earlier run vote with their crop."""
    labels = {i: int(ds.labels[i]) for i in first}
    need = {labels[i] for i in pending}
    for i in resumed:
        rows = log.previous.get(ds.path(i)) or []
        if int(ds.labels[i]) in need and rows and rows[0]["crop"] is not None:
            with Image.open(out_root / rows[0]["crop"]) as im:
                first[i] = embedder([im.convert("RGB")])[0]
            labels[i] = int(ds.labels[i])
    chosen = choose_by_identity(labels, first, {i: p.embeddings for i, p in pending.items()})
    residuals = []
    for i, p in pending.items():
        k, sim = chosen[i]
        row = p.rows[k]
        row["crop"], row["similarity"] = rel_of(i), None if np.isnan(sim) else sim
        save(p.crops[k], out_root / row["crop"])
        log.add([row])
        residuals.append(row["residual"])
    return residuals


def _crops(out_root: Path, rows: list[dict], paths: list[str], rels: list[str]):
    """The crops each photo has by its record rows (relative paths; empty where none).
    Crops an earlier run left for a photo that now has fewer or other ones (other settings,
    another --pick: ``a.jpg`` of "largest" beside ``a_1.jpg`` of "all") are removed, so the
    output folder holds exactly what the record says. A name that is another photo's crop
    (a photo itself called ``a_1.jpg``) is never removed."""
    by_photo: dict[str, list[str]] = {}
    for r in rows:
        if r["crop"] is not None:
            by_photo.setdefault(r["path"], []).append(r["crop"])
    current = {c for have in by_photo.values() for c in have}
    out = []
    for path, rel in zip(paths, rels, strict=True):
        have = by_photo.get(path, [])
        candidates, k = [rel], 1
        while (out_root / suffixed(rel, k)).exists():
            candidates.append(suffixed(rel, k))
            k += 1
        for f in candidates:
            if f not in current:
                (out_root / f).unlink(missing_ok=True)
        out.append(have)
    return out


def _nothing_aligned(n: int, failures: list, failures_path: Path, out_root: Path, final: Path):
    """Refuse a run that wrote no crop at all (a wrong --root, photos with no face): exit 0
    with an empty output would pass for a result. The record and the failures list stay
    for the reasons; the output folder goes if nothing is in it."""
    reasons: dict[str, int] = {}
    for _, _, msg in failures:
        kind = msg.split(":", 1)[0]
        reasons[kind] = reasons.get(kind, 0) + 1
    top = ", ".join(f"{c:,} {k}" for k, c in sorted(reasons.items(), key=lambda kv: -kv[1])[:3])
    photo, _, msg = failures[0]
    with contextlib.suppress(OSError):
        out_root.rmdir()  # only when empty: crops of other photos are never removed
    raise FacecleanError(
        f"no face aligned in any of the {n:,} photos ({top}; e.g. {photo}: {msg}); each "
        f"photo's reason is in {failures_path}",
        final,
    )


def _write_list(ds: FaceDataset, out_root: Path, name: str, crops: list[list[str]]) -> Path:
    """``<output>/<name>``: one ``path label`` line per written crop, original labels."""
    lines = [f"{r} {ds.identities[ds.labels[i]]}\n" for i, found in enumerate(crops) for r in found]
    path = out_root / name
    with atomic_path(path) as tmp:
        tmp.write_text("".join(lines))
    return path
