"""The report's complete list of removals: every face the filter dropped, with its file name.

``removals.csv`` (one row per removal) and ``removals/page-0001.html``, ... (``PAGE_ROWS``
rows a page, linked to each other), lowest D first: ``path``, ``identity`` (``label``),
``discriminability``, ``cos_pos``, ``cos_neg`` and the hardest negative class. Written
into the report folder, which is built aside and swapped in whole.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from faceclean.data.store import atomic_path

PAGE_ROWS = 500


def negative_identities(scores: pa.Table, negatives: np.ndarray) -> pa.Array:
    """The identity of each label in ``negatives`` (null for a label ``scores`` lacks)."""
    present, first = np.unique(scores["label"].to_numpy(), return_index=True)
    where = np.clip(np.searchsorted(present, negatives), 0, len(present) - 1)
    names = scores["identity"].take(pa.array(first[where]))
    return pc.if_else(pa.array(present[where] == negatives), names, None)


def removals_table(scores: pa.Table) -> pa.Table:
    """The dropped rows, lowest D first, with the hardest negative's identity."""
    removed = scores.filter(pc.invert(scores["keep"]))
    d = np.nan_to_num(removed["discriminability"].to_numpy(zero_copy_only=False), nan=np.inf)
    removed = removed.take(pa.array(np.argsort(d, kind="stable")))
    neg = removed["hardest_negative"].to_numpy()
    return pa.table(
        {
            "path": removed["path"],
            "label": removed["label"],
            "identity": removed["identity"],
            "discriminability": removed["discriminability"],
            "cos_pos": removed["cos_pos"],
            "cos_neg": removed["cos_neg"],
            "hardest_negative": removed["hardest_negative"],
            "negative_identity": negative_identities(scores, neg).cast(pa.string()),
        }
    )


def _page(rows: list[dict], start: int, number: int, pages: int, total: int) -> str:
    def link(n: int, text: str) -> str:
        return f"<a href='page-{n:04d}.html'>{text}</a>" if 1 <= n <= pages else ""

    nav = (
        f"<p>removals {start + 1}-{start + len(rows)} of {total} (lowest D first) · page "
        f"{number} of {pages} {link(number - 1, 'previous')} {link(number + 1, 'next')} "
        "<a href='../report.html'>report</a> <a href='../removals.csv'>all as CSV</a></p>"
    )
    cells = "".join(
        f"<tr><td>{start + i + 1}</td><td>{html.escape(r['path'])}</td>"
        f"<td>{html.escape(str(r['identity']))} ({r['label']})</td>"
        f"<td>{r['discriminability']:.3f}</td><td>{r['cos_pos']:.3f}</td>"
        f"<td>{r['cos_neg']:.3f}</td><td>{html.escape(str(r['negative_identity']))} "
        f"({r['hardest_negative']})</td></tr>"
        for i, r in enumerate(rows)
    )
    return (
        "<html><head><meta charset='utf-8'><title>faceclean removals</title><style>"
        "td,th{padding:2px 8px;font-family:monospace;text-align:left}"
        "tr:nth-child(even){background:#f2f2f2}</style></head><body>"
        f"{nav}<table><tr><th>#</th><th>file</th><th>class</th><th>D</th><th>cos_pos</th>"
        f"<th>cos_neg</th><th>hardest negative</th></tr>{cells}</table>{nav}</body></html>"
    )


def write_removals(scores: pa.Table, folder: Path) -> tuple[dict[str, Path], int]:
    """Write removals.csv and the paged HTML into the report ``folder``; returns
    ``{"removals_csv": ..., "removals_pages": first page}`` (no page when none removed)
    and the number of removals."""
    table = removals_table(scores)
    out = {"removals_csv": folder / "removals.csv"}
    with atomic_path(out["removals_csv"]) as tmp:
        pacsv.write_csv(table, tmp)
    total = table.num_rows
    pages = -(-total // PAGE_ROWS)
    if pages:
        (folder / "removals").mkdir()
        out["removals_pages"] = folder / "removals" / "page-0001.html"
    for n in range(1, pages + 1):
        start = (n - 1) * PAGE_ROWS
        rows = table.slice(start, PAGE_ROWS).to_pylist()
        with atomic_path(folder / "removals" / f"page-{n:04d}.html") as tmp:
            tmp.write_text(_page(rows, start, n, pages, total))
    return out, total


def removals_section(out: dict[str, Path], total: int) -> str:
    """The report.html paragraph that links to every removal."""
    if "removals_pages" not in out:
        return "<h2>Every removal</h2><p>The filter removed nothing.</p>"
    pages = -(-total // PAGE_ROWS)
    return (
        f"<h2>Every removal</h2><p>{total} removals with their file names, lowest D first: "
        f"<a href='removals/page-0001.html'>{pages} page(s) of {PAGE_ROWS}</a>, or "
        "<a href='removals.csv'>removals.csv</a>. To decide on them one by one: "
        "<code>faceclean review</code> on this clean folder.</p>"
    )
