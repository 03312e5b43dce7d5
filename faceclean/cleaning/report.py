"""`faceclean report`: what a person looks at after a clean.

Reads a `faceclean clean` folder and writes a report folder (``<clean>/report/`` by
default; built aside and swapped in whole, an existing one needs ``overwrite``):
``discriminability.png`` (histogram of D, threshold marked), ``drops_per_class.csv``
(classes by number of dropped samples), ``groups.csv`` (every merged group with its links),
``contact_sheet.png`` (the lowest-D samples beside the typical faces of their own class and
of their hardest negative; only when the images can be read), every removal with its file
name (``removals.csv`` and ``removals/page-NNNN.html``, see :mod:`.report_removals`), and
``report.html`` tying them together.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from faceclean.cleaning.clean import read_clean_summary
from faceclean.cleaning.report_groups import face_sections
from faceclean.cleaning.report_removals import removals_section, write_removals
from faceclean.data.datasets import read_image_bytes
from faceclean.data.preprocess import decode_image
from faceclean.data.store import as_paths, atomic_path, read_metadata
from faceclean.errors import FacecleanError
from faceclean.outputs import writing

THUMB = 96


def _plot_discriminability(d: np.ndarray, tau: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finite = d[np.isfinite(d)]
    hi = float(np.quantile(finite, 0.995)) if len(finite) else 1.0
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.hist(np.clip(finite, None, hi), bins=100, color="#4477aa")
    ax.axvline(tau, color="#cc3311", lw=2, label=f"tau_intra = {tau}")
    ax.set_yscale("log")
    ax.set_xlabel("discriminability D = cos_pos / cos_neg (clipped at the 99.5th percentile)")
    ax.set_ylabel("samples")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _thumb(root: Path, rel: str) -> Image.Image:
    try:
        img = decode_image(read_image_bytes(root, rel))
    except (OSError, ValueError):
        img = Image.new("RGB", (THUMB, THUMB), (80, 0, 0))
    return img.resize((THUMB, THUMB))


def _contact_sheet(
    scores: pa.Table, root: Path, path: Path, rows: int = 12, typical: int = 4
) -> None:
    """Each row: a low-D sample (red frame), its class's most typical faces, then the
    hardest negative class's most typical faces."""
    d = scores["discriminability"].to_numpy(zero_copy_only=False)
    labels = scores["label"].to_numpy()
    paths = scores["path"].to_pylist()
    cos_pos = scores["cos_pos"].to_numpy(zero_copy_only=False)
    neg = scores["hardest_negative"].to_numpy()
    # Users know their identities by name (folder s10), not by faceclean's label ids.
    names = dict(zip(labels.tolist(), scores["identity"].to_pylist(), strict=True))
    order = np.argsort(np.where(np.isnan(d), np.inf, d), kind="stable")[:rows]

    def typical_of(label):
        members = np.flatnonzero(labels == label)
        return members[np.argsort(-cos_pos[members])][:typical]

    cols = 1 + 2 * typical
    sheet = Image.new("RGB", (cols * (THUMB + 4), len(order) * (THUMB + 18)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, i in enumerate(order):
        y = r * (THUMB + 18)
        own = [j for j in typical_of(labels[i]) if j != i][:typical]
        cells = [(0, i, "#cc3311")]
        cells += [(1 + c, j, "#228833") for c, j in enumerate(own)]
        cells += [(1 + typical + c, j, "#4477aa") for c, j in enumerate(typical_of(neg[i]))]
        for col, j, colour in cells:
            x = col * (THUMB + 4)
            sheet.paste(_thumb(root, paths[j]), (x, y))
            draw.rectangle([x, y, x + THUMB - 1, y + THUMB - 1], outline=colour, width=2)
        draw.text(
            (2, y + THUMB + 2),
            f"D={d[i]:.2f} {names[labels[i]]} (label {labels[i]}) -> negative "
            f"{names.get(neg[i], '?')} (label {neg[i]})",
            fill="black",
        )
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")


def write_report(
    clean_dir: str | Path,
    data_root: str | Path | None = None,
    output: str | Path | None = None,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write the report folder; returns its files' paths by name.

    Args:
        clean_dir: a folder written by ``faceclean clean``.
        data_root: where the images are, for the contact sheet [default: the dataset the
            embeddings record; the sheet is skipped when its images cannot be found].
        output: the report folder [default: ``clean_dir/report``].
        overwrite: replace an existing report folder.
    """
    clean_dir = Path(clean_dir)
    summary = read_clean_summary(clean_dir)
    if data_root is not None and not Path(data_root).is_dir():
        # Asked for by name: not a sheet quietly skipped (nor blamed on the recorded root).
        raise FacecleanError("--data is not a folder (the images of the contact sheet)", data_root)
    output = Path(output) if output is not None else clean_dir / "report"
    with writing(output, overwrite=overwrite, inputs=[clean_dir], folder=True) as tmp:
        files = _write_report(clean_dir, summary, data_root, tmp)
    # Paths inside the folder as they are there (removals/page-0001.html, not page-0001.html).
    out: dict = {k: output / v.relative_to(tmp) for k, v in files.items()}
    if "contact_sheet" not in out:  # said, not silently left out
        out["contact_sheet"] = (
            "not made: the images are not found (the dataset folder the embeddings record "
            "is gone); give --data IMAGE_ROOT"
        )
    return out


def _write_report(clean_dir: Path, summary: dict, data_root, folder: Path) -> dict[str, Path]:
    scores = pq.read_table(clean_dir / "scores.parquet")
    out = {
        "histogram": folder / "discriminability.png",
        "drops": folder / "drops_per_class.csv",
        "groups": folder / "groups.csv",
    }
    _plot_discriminability(
        scores["discriminability"].to_numpy(zero_copy_only=False),
        summary["tau_intra"],
        out["histogram"],
    )

    per_class = scores.group_by(["label", "identity"]).aggregate(
        [("keep", "count"), ("keep", "sum")]
    )
    samples = per_class["keep_count"]
    dropped = pc.subtract(samples, per_class["keep_sum"])
    drops = pa.table(
        {
            "label": per_class["label"],
            "identity": per_class["identity"],
            "samples": samples,
            "dropped": dropped,
        }
    )
    drops = drops.take(pc.sort_indices(drops, [("dropped", "descending"), ("label", "ascending")]))
    with atomic_path(out["drops"]) as tmp:
        pacsv.write_csv(drops, tmp)

    merges = pq.read_table(clean_dir / "merges.parquet")
    pairs = pq.read_table(clean_dir / "pairs.parquet")
    group_of = dict(
        zip(merges["label"].to_pylist(), merges["merged_label"].to_pylist(), strict=True)
    )
    rows = [
        {"group": group_of[a], "label_a": a, "label_b": b, "cosine": c, "merged": m}
        for a, b, c, m in zip(
            pairs["label_a"].to_pylist(),
            pairs["label_b"].to_pylist(),
            pairs["cosine"].to_pylist(),
            pairs["merged"].to_pylist(),
            strict=True,
        )
    ]
    with atomic_path(out["groups"]) as tmp:
        pacsv.write_csv(
            pa.Table.from_pylist(
                rows,
                schema=pa.schema(
                    [
                        ("group", pa.int64()),
                        ("label_a", pa.int64()),
                        ("label_b", pa.int64()),
                        ("cosine", pa.float32()),
                        ("merged", pa.bool_()),
                    ]
                ),
            ),
            tmp,
        )

    root = data_root or read_metadata(as_paths(summary["embeddings"])[0]).get("dataset")
    if root and Path(root).exists():
        out["contact_sheet"] = folder / "contact_sheet.png"
        _contact_sheet(scores, Path(root), out["contact_sheet"])

    removal_files, removals = write_removals(scores, folder)
    out |= removal_files
    out["html"] = folder / "report.html"
    top = drops.slice(0, 20).to_pylist()
    groups = summary.get("largest_groups", [])
    sources = ", ".join(map(str, as_paths(summary["embeddings"])))
    parts = [
        "<html><head><meta charset='utf-8'><title>faceclean report</title></head><body>",
        f"<h1>faceclean clean: {html.escape(sources)}</h1>",
        "<table>"
        + "".join(
            f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
            for k, v in summary.items()
            if k != "largest_groups"
        )
        + "</table>",
        "<h2>Discriminability</h2><img src='discriminability.png'>",
        *(  # --tau-intra auto: what was chosen and why (faceclean.cleaning.thresholds)
            f"<p>{k[: -len('_auto')]} = {summary.get(k[: -len('_auto')])}, chosen from the "
            f"data: {html.escape(str(v))}</p>"
            for k, v in summary.items()
            if k.endswith("_auto")
        ),
        "<h2>Classes with the most dropped samples</h2><table><tr><th>label</th><th>identity"
        "</th><th>samples</th><th>dropped</th></tr>"
        + "".join(
            f"<tr><td>{r['label']}</td><td>{html.escape(str(r['identity']))}</td>"
            f"<td>{r['samples']}</td><td>{r['dropped']}</td></tr>"
            for r in top
        )
        + "</table>",
        "<h2>Largest merged groups</h2><ul>"
        + "".join(f"<li>{len(g)} classes: {g[:30]}</li>" for g in groups)
        + "</ul>"
        "<p>Every link: groups.csv</p>",
    ]
    if "contact_sheet" in out:
        parts.append(
            "<h2>Lowest-D samples</h2><p>red: the sample; green: its class's most "
            "typical faces; blue: its hardest negative class's</p>"
            "<img src='contact_sheet.png'>"
        )
    parts.append(removals_section(out, removals))
    # Faces side by side: merged groups, evaluation overlap, near-duplicates (data URIs).
    parts += face_sections(
        clean_dir, summary, scores, root if root and Path(root).exists() else None
    )
    parts.append("</body></html>")
    with atomic_path(out["html"]) as tmp:
        tmp.write_text("\n".join(parts))
    return out
