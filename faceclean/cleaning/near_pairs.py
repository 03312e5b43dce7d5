"""Every pair of images with cosine above ``tau``, exactly, without comparing all pairs.

The bound (unit vectors a, b and any unit c): |a.c - b.c| <= |a - b| = sqrt(2 - 2 cos(a, b)).
So with r = sqrt(2 - 2 tau), two duplicates have nearly the same similarity to every
centroid. Each image b is anchored at its most similar class centroid (``cell`` g_b, with
similarity h_b = b.c_{g_b}; its label does not matter, so a mislabelled image sits in the
cell of the class it looks like). For a pair (a, b) with h_a <= h_b:

    a.c_{g_b} >= h_b - |a - b| > h_b - r >= h_a - r,

so b's cell is among a's *candidate cells* {k : a.c_k >= h_a - r}, and inside it b lies in
the window h_a <= h_b <= a.c_{g_b} + r. Each pair is found once, from its endpoint with the
smaller (h, row). One streaming pass computes the similarities to every centroid (the
filter's matrix product), the anchors and the candidate cells; then each cell's members
are compared with the images that list it, members restricted to their windows. With
face-like data (a face's own centroid at ~0.76, other centroids near 0) the candidate list
of an image is its own cell, so the second step costs about (rows per class) dot products
per image against the pass's K: the whole search is about one filter pass.

Images far from every centroid (junk, h_a small) list many cells; past ``LIST_CAP`` cells
an image is *wide* and its cells are recomputed after the pass with the tighter per-cell
test a.c_k + r >= max(h_a, lowest h in cell k), which only cells holding other far images
pass. Exactness: similarities are float32 and the bound takes a slack of ``SLACK`` (far
above float32 rounding), so a candidate is never missed; every reported cosine is the
float32 dot product of the two unit embeddings, as an all-pairs search computes it.

Memory: the K x d centroids, one batch and its K-wide similarity block, and O(N) scalars
(anchors, candidate lists, sort keys; a dedup run grew ~320 bytes a row); never N x d. The
unit embeddings are spilled as float32 to a temporary file (N x d x 4 bytes of disk) and
read back one group of cells at a time.
"""

from __future__ import annotations

import tempfile
import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from faceclean.cleaning.faiss_backend import _block_rows, _blocks
from faceclean.cleaning.store_sums import _checked_batches, class_sums, normalise_rows
from faceclean.data.store import as_paths
from faceclean.errors import FacecleanError
from faceclean.progress import RowProgress

SLACK = 1e-4  # added to the bound's radius: far above float32 rounding (~1e-6) of the sims
LIST_CAP = 64  # candidate cells an image may list in the pass; beyond, it is "wide"
CHUNK_ROWS = 1 << 16  # embeddings read back from the spill at a time (phase 2)


def radius(tau: float) -> float:
    """sqrt(2 - 2 tau) + SLACK: the most two images above ``tau`` differ in any direction."""
    return float(np.sqrt(max(0.0, 2.0 - 2.0 * tau))) + SLACK


class PairSearch:
    """The search's state, fed the rows in order with their similarity blocks.

    ``add_block(x, sims)`` takes unit float32 rows and their similarities to the unit
    centroids of the present classes (``x @ C.T``: the filter's product, so `clean` can
    share one pass with the filter); :meth:`pairs` then finds every pair. The rows are
    spilled to a temporary file in ``spill_dir``; :meth:`close` deletes it.
    """

    def __init__(self, tau: float, spill_dir: str | Path | None = None):
        if not -1.0 <= tau <= 1.0:
            raise FacecleanError(f"--dedup must be a cosine in [-1, 1], not {tau}")
        self.tau, self.r, self.n, self.dim = tau, radius(tau), 0, None
        self.spill = tempfile.NamedTemporaryFile(
            dir=spill_dir, prefix=".dedup-", suffix=".f32", delete=False
        )
        # Deleted by close(), or when the search is dropped (a filter that failed half way):
        # quietly, also when its folder is already gone.
        self._cleanup = weakref.finalize(self, _remove, self.spill)
        self.cell, self.sim, self.wide = [], [], []
        self.rows, self.cells, self.sims = [], [], []

    def add_block(self, x: np.ndarray, sims: np.ndarray) -> None:
        x = np.ascontiguousarray(x, dtype=np.float32)
        self.dim = x.shape[1]
        self.spill.write(x.tobytes())
        g = sims.argmax(1)
        h = sims[np.arange(len(x)), g]
        listed = sims >= (h - self.r)[:, None]
        n_listed = listed.sum(1)
        wide = n_listed > LIST_CAP
        if wide.any():
            self.wide.append(self.n + np.flatnonzero(wide))
        # Most rows list their own cell only: nonzero() runs on the others' rows alone
        # (on every row it cost as much as the rest of the pass, measured).
        one = np.flatnonzero(n_listed == 1)
        many = np.flatnonzero((n_listed > 1) & ~wide)
        rr, kk = np.nonzero(listed[many])
        rr = many[rr]
        self.rows += [self.n + one, self.n + rr]
        self.cells += [g[one], kk]
        self.sims += [h[one], sims[rr, kk]]
        self.cell.append(g)
        self.sim.append(h)
        self.n += len(x)

    def close(self) -> None:
        self._cleanup()

    def pairs(
        self, centroids_t: np.ndarray, progress: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every pair (a < b, cosine > tau), sorted by (a, b). ``centroids_t``: the float32
        [d, K] unit centroids the blocks were computed against (for the wide rows)."""
        self.spill.flush()
        n, dim, r, cat = self.n, self.dim, self.r, np.concatenate
        if n < 2:
            empty = np.zeros(0, np.int64)
            return empty, empty, np.zeros(0, np.float32)
        g, h = cat(self.cell).astype(np.int64), cat(self.sim)
        q_row, q_cell, q_sim = cat(self.rows), cat(self.cells).astype(np.int64), cat(self.sims)
        # Members of every cell sorted by (cell, h, row); a float key (cell * 4 + h, h in
        # [-1, 1]) makes each cell's window one searchsorted.
        order = np.lexsort((np.arange(n), h, g))
        keys = g[order] * 4.0 + h[order].astype(np.float64)
        if self.wide:
            cell_low = np.full(centroids_t.shape[1], np.inf, np.float32)
            np.minimum.at(cell_low, g, h)
            wide = cat(self.wide)
            more = _wide_candidates(self.spill.name, n, dim, wide, h, cell_low, centroids_t, r)
            q_row = cat([q_row, *more[0]])
            q_cell = cat([q_cell, *more[1]])
            q_sim = cat([q_sim, *more[2]])
        lo = np.searchsorted(keys, q_cell * 4.0 + h[q_row].astype(np.float64), "left")
        hi = np.searchsorted(keys, q_cell * 4.0 + q_sim.astype(np.float64) + r, "right")
        alive = hi > lo
        q_row, q_cell, lo, hi = q_row[alive], q_cell[alive], lo[alive], hi[alive]
        by_cell = np.argsort(q_cell, kind="stable")
        q_row, q_cell, lo, hi = q_row[by_cell], q_cell[by_cell], lo[by_cell], hi[by_cell]
        a, b, cos = _compare(
            self.spill.name, n, dim, self.tau, h, order, q_row, q_cell, lo, hi, progress
        )
        swap = a > b
        a, b = np.where(swap, b, a), np.where(swap, a, b)
        sort = np.lexsort((b, a))
        return a[sort], b[sort], cos[sort]


def _remove(spill) -> None:
    spill.close()
    Path(spill.name).unlink(missing_ok=True)


def unit_centroids_t(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """float32 [d, K'] unit centroids of the present classes, as the filter's index holds
    them (normalised in the sums' precision, then cast)."""
    present = np.flatnonzero(counts > 0)
    unit = normalise_rows(sums).astype(np.float32, copy=False)
    return (unit if len(present) == len(unit) else unit[present]).T  # a view: BLAS reads it


def _wide_candidates(spill_path, n, dim, wide, h, cell_low, centroids_t, r):
    """Candidate cells of the wide rows, with the per-cell test (see the module doc)."""
    rows, cells, sims = [], [], []
    for s, e in _blocks(len(wide), 4096):
        ids = wide[s:e]
        x = _read_rows(spill_path, n, dim, ids)
        block = x @ centroids_t
        need = np.maximum(h[ids][:, None], cell_low[None, :]) - r
        rr, kk = np.nonzero(block >= need)
        rows.append(ids[rr])
        cells.append(kk)
        sims.append(block[rr, kk])
    return rows, cells, sims


def _read_rows(spill_path, n: int, dim: int, ids: np.ndarray) -> np.ndarray:
    """Rows ``ids`` (sorted) of the spill; the map is dropped at once so that resident
    memory stays one chunk."""
    mm = np.memmap(spill_path, np.float32, "r", shape=(n, dim))
    try:
        return np.array(mm[ids])
    finally:
        del mm


def _cell_groups(q_cell: np.ndarray) -> Iterator[tuple[int, int]]:
    """(start, end) of each run of one cell in the cell-sorted candidate list."""
    if len(q_cell) == 0:
        return
    cuts = np.flatnonzero(np.diff(q_cell)) + 1
    bounds = np.concatenate([[0], cuts, [len(q_cell)]])
    yield from zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)


def near_pairs(
    paths,
    tau: float,
    *,
    sums: np.ndarray | None = None,
    counts: np.ndarray | None = None,
    batch_rows: int = 65536,
    spill_dir: str | Path | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair of rows whose unit embeddings have cosine > ``tau``, exactly.

    Args:
        paths: one embedding store or the shards of one (rows numbered in order across them).
        tau: cosine threshold in [-1, 1].
        sums, counts: per-class sums and counts of these stores when already computed
            (:func:`faceclean.cleaning.filter.class_sums`); otherwise one more pass.
        batch_rows: rows per streamed batch.
        spill_dir: folder for the temporary float32 copy of the unit embeddings
            (N x d x 4 bytes; default: the system's temporary folder).
        progress: progress bar on stderr.

    Returns:
        (a, b, cosine): int64 row pairs with a < b, each pair once, sorted by (a, b), and
        their float32 cosines.
    """
    paths = as_paths(paths)
    if sums is None or counts is None:
        sums, counts = class_sums(paths, batch_rows)
    centroids_t = unit_centroids_t(sums, counts)
    size = centroids_t.shape[1]
    search = PairSearch(tau, spill_dir)
    bar = RowProgress(progress, "dedup: anchors", int(counts.sum()))
    try:
        buf = np.empty((0, size), np.float32)
        for batch in _checked_batches(paths, ("label", "embedding"), batch_rows):
            x = np.ascontiguousarray(batch["embedding"], dtype=np.float32)
            if len(buf) < min(len(x), _block_rows(len(x), size)):
                buf = np.empty((_block_rows(len(x), size), size), np.float32)
            for s, e in _blocks(len(x), len(buf)):
                search.add_block(x[s:e], np.matmul(x[s:e], centroids_t, out=buf[: e - s]))
            bar.advance(len(x))
        bar.close()
        return search.pairs(centroids_t, progress)
    finally:
        search.close()


def _compare(*args):
    """Phase 2 with one BLAS thread: the products are small (a class's rows against a
    class's rows), and waking BLAS threads for each cost 15x the work itself on a loaded
    2-core machine (measured at 200K rows: 19.6 s against 1.3 s)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):
        return _compare_cells(*args)


def _compare_cells(spill_path, n, dim, tau, h, order, q_row, q_cell, lo, hi, progress):
    """Each cell's members against the rows that list it, chunk by chunk."""
    out_a, out_b, out_s = [], [], []
    groups = list(_cell_groups(q_cell))
    bar = RowProgress(progress, "dedup: pairs", len(groups), unit="cells")
    i = 0
    while i < len(groups):
        # A chunk: consecutive cells until about CHUNK_ROWS embeddings are needed.
        j, need = i, 0
        while j < len(groups) and (need < CHUNK_ROWS or j == i):
            s, e = groups[j]
            need += (e - s) + int(hi[s:e].max() - lo[s:e].min())
            j += 1
        parts = []
        for s, e in groups[i:j]:
            parts += [q_row[s:e], order[lo[s:e].min() : hi[s:e].max()]]
        ids = np.unique(np.concatenate(parts))
        rows = _read_rows(spill_path, n, dim, ids)
        for s, e in groups[i:j]:
            qa = q_row[s:e]
            mb = order[lo[s:e].min() : hi[s:e].max()]
            sims = rows[np.searchsorted(ids, qa)] @ rows[np.searchsorted(ids, mb)].T
            # Each pair once: from the endpoint with the smaller (h, row).
            ha, hb = h[qa][:, None], h[mb][None, :]
            later = (hb > ha) | ((hb == ha) & (mb[None, :] > qa[:, None]))
            rr, cc = np.nonzero((sims > tau) & later)
            out_a.append(qa[rr])
            out_b.append(mb[cc])
            out_s.append(sims[rr, cc])
        bar.advance(j - i)
        i = j
    bar.close()
    if not out_a:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, np.float32)
    return (
        np.concatenate(out_a).astype(np.int64),
        np.concatenate(out_b).astype(np.int64),
        np.concatenate(out_s).astype(np.float32),
    )
