"""Exact inner-product search over centroids: FAISS on every GPU, blocked BLAS on the CPU.

Both are brute force and exact up to float32 rounding, so CPU and GPU give the same
results. On the CPU a blocked ``X @ C.T`` into a reused buffer followed by an argmax runs
at the machine's matrix-multiply floor (measured: 0.99x the floor against faiss-cpu's
1.19x for top-2 at K=20K, d=512; see benchmarks/bench_clean.py), so faiss-cpu is used only
when asked for (``backend="faiss"``). :func:`pairs_above` finds every pair above a cosine
exactly (merge's links, overlap, near-duplicates). Import faiss lazily so that stages
that do not search need not load it.
"""

from __future__ import annotations

import numpy as np

from faceclean.errors import FacecleanError

# The most neighbours one FAISS search may ask for: faiss-gpu refuses k above 2048 (its
# k-selection limit in current releases); faiss-cpu has no limit, but one cap for both keeps
# CPU and GPU on the same code path. Rows with more matches than this are finished by an
# exhaustive blocked scan (:meth:`InnerProductIndex.above`).
K_CAP = 2048


def _faiss():
    try:
        import faiss
    except ImportError:
        raise FacecleanError(
            "FAISS is not installed: pip install 'faceclean[cpu]' (or [gpu])"
        ) from None
    return faiss


def _gpus_quietly() -> int:
    """GPUs FAISS can use, 0 when faiss is not installed (the BLAS path needs none)."""
    try:
        return num_gpus()
    except FacecleanError:
        return 0


def num_gpus() -> int:
    faiss = _faiss()
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def _block_rows(n_queries: int, n_vectors: int) -> int:
    """Query rows per matrix product: a ~256 MB similarity buffer, 16 to 2048 rows (2048
    rows x 85K classes would need 700 MB; x 2M classes, 16 GB)."""
    return max(1, min(n_queries, max(16, min(2048, (1 << 28) // (4 * n_vectors)))))


def _blocks(n: int, block: int):
    for s in range(0, n, block):
        yield s, min(s + block, n)


class InnerProductIndex:
    """Inner products of queries against a fixed set of vectors.

    Args:
        vectors: float32 [K, d], the database (e.g. unit centroids).
        device: "auto" (every GPU when faiss-gpu sees one, sharded), "cpu" or "cuda".
        backend: "auto" (FAISS on GPU, BLAS on CPU), "faiss" or "blas".
    """

    def __init__(self, vectors: np.ndarray, device: str = "auto", backend: str = "auto"):
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)  # no copy when it is
        self.size = len(vectors)
        self.vectors = vectors  # kept for the exhaustive scan of rows past the k cap
        self.vectors_t = None
        if backend == "blas" or (backend == "auto" and device != "cuda" and _gpus_quietly() == 0):
            if device == "cuda":
                raise FacecleanError("--device cuda needs the FAISS backend (faceclean[gpu])")
            # A transposed view, not a copy (2M x 512 classes: 4.1 GB saved); BLAS reads it
            # as a transposed operand at the same speed (measured within noise).
            self.vectors_t = vectors.T
            self.device = "cpu (BLAS)"
            return
        faiss = _faiss()
        index = faiss.IndexFlatIP(vectors.shape[1])
        gpus = num_gpus()
        if device == "cuda" and gpus == 0:
            raise FacecleanError("--device cuda asked for, but FAISS sees no GPU (faceclean[gpu])")
        if device != "cpu" and gpus > 0:
            options = faiss.GpuMultipleClonerOptions()
            options.shard = True  # split the centroids over the GPUs, merge the top-k
            index = faiss.index_cpu_to_all_gpus(index, co=options)
            self.device = f"cuda x{gpus}"
        else:
            self.device = "cpu (FAISS)"
        index.add(vectors)
        self.index = index

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities [n, k] descending, positions [n, k] into ``vectors``).

        On the FAISS backend k must not exceed :data:`K_CAP` (faiss-gpu refuses it)."""
        k = min(k, self.size)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self.vectors_t is None:
            if k > K_CAP:
                raise ValueError(f"k={k} is above the FAISS cap {K_CAP}: use pairs_above")
            return self.index.search(queries, k)
        sims = np.empty((len(queries), k), np.float32)
        pos = np.empty((len(queries), k), np.int64)
        buf = np.empty((_block_rows(len(queries), self.size), self.size), np.float32)
        for s, e in _blocks(len(queries), len(buf)):
            block = np.matmul(queries[s:e], self.vectors_t, out=buf[: e - s])
            if k == 1:
                top = block.argmax(1)[:, None]
            else:
                part = np.argpartition(block, -k, axis=1)[:, -k:]
                order = np.argsort(-np.take_along_axis(block, part, 1), axis=1, kind="stable")
                top = np.take_along_axis(part, order, 1)
            pos[s:e] = top
            sims[s:e] = np.take_along_axis(block, top, 1)
        return sims, pos

    def hardest_excluding(
        self, queries: np.ndarray, exclude: np.ndarray, on_block=None
    ) -> tuple[np.ndarray, np.ndarray]:
        """For each query, the best match other than position ``exclude[i]``:
        (similarity [n], position [n]). Positions < 0 exclude nothing.

        ``on_block(rows, sims)``, when given, sees every block of queries with its full
        similarity block (nothing excluded) before it is reused: `clean --dedup` finds its
        near-duplicate candidates in the filter's own product. The FAISS backend has no
        such block: there it costs one more blocked BLAS product."""
        if on_block is not None and self.vectors_t is None:
            self.above_blocks(queries, on_block)
        if self.vectors_t is None:
            sims, pos = self.search(queries, 2)
            first_is_own = pos[:, 0] == exclude
            return (
                np.where(first_is_own, sims[:, 1], sims[:, 0]),
                np.where(first_is_own, pos[:, 1], pos[:, 0]),
            )
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        sims = np.empty(len(queries), np.float32)
        pos = np.empty(len(queries), np.int64)
        buf = np.empty((_block_rows(len(queries), self.size), self.size), np.float32)
        for s, e in _blocks(len(queries), len(buf)):
            block = np.matmul(queries[s:e], self.vectors_t, out=buf[: e - s])
            if on_block is not None:
                on_block(queries[s:e], block)
            rows = np.flatnonzero(exclude[s:e] >= 0)
            block[rows, exclude[s:e][rows]] = -np.inf
            best = block.argmax(1)
            pos[s:e] = best
            sims[s:e] = block[np.arange(e - s), best]
        return sims, pos

    def above_blocks(self, queries: np.ndarray, on_block) -> None:
        """``on_block(rows, sims)`` for consecutive blocks of queries, by blocked BLAS."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        vectors_t = self.vectors_t if self.vectors_t is not None else self.vectors.T
        buf = np.empty((_block_rows(len(queries), self.size), self.size), np.float32)
        for s, e in _blocks(len(queries), len(buf)):
            on_block(queries[s:e], np.matmul(queries[s:e], vectors_t, out=buf[: e - s]))

    def above(self, queries: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every (query row, position, similarity) with similarity > tau, by an exhaustive
        blocked matrix product on the CPU (for the few rows with more matches than a
        k-nearest search may return)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        vectors_t = self.vectors_t if self.vectors_t is not None else self.vectors.T
        out_r, out_c, out_s = [], [], []
        buf = np.empty((_block_rows(len(queries), self.size), self.size), np.float32)
        for s, e in _blocks(len(queries), len(buf)):
            block = np.matmul(queries[s:e], vectors_t, out=buf[: e - s])
            # A row maximum first (a fast reduction): nonzero() then runs on the few rows
            # with a match, not on the whole block.
            hit = np.flatnonzero(block.max(1) > tau)
            r, c = np.nonzero(block[hit] > tau)
            r = hit[r]
            out_r.append(r + s)
            out_c.append(c)
            out_s.append(block[r, c])
        return _concat(out_r, out_c, out_s)


def _concat(rows, cols, sims) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return (
        np.concatenate(rows).astype(np.int64),
        np.concatenate(cols).astype(np.int64),
        np.concatenate(sims).astype(np.float32),
    )


def pairs_above(
    index: InnerProductIndex, queries: np.ndarray, tau: float, k: int = 8
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (query row, index position, cosine) with cosine > tau, exactly.

    Searches the top k and doubles k for the rows whose k-th match is still above tau, so
    the cost follows the number of matches, not the size of the index. k never exceeds
    :data:`K_CAP` (faiss-gpu's limit): rows still full at the cap are scanned exhaustively.
    """
    rows_out, cols_out, sims_out = [], [], []
    todo = np.arange(len(queries))
    cap = min(K_CAP, index.size)
    k = max(1, min(k, cap))
    while len(todo):
        # The first round asks for every query: no copy of them (K x d at merge's scale).
        sims, pos = index.search(queries if len(todo) == len(queries) else queries[todo], k)
        full = (sims[:, -1] > tau) & (k < index.size)
        done = ~full
        hit = (sims > tau) & (pos >= 0) & done[:, None]
        r, c = np.nonzero(hit)
        rows_out.append(todo[r])
        cols_out.append(pos[r, c])
        sims_out.append(sims[r, c])
        todo = todo[full]
        if k == cap and len(todo):  # past the cap: every match of these rows, exhaustively
            r, c, s = index.above(queries[todo], tau)
            rows_out.append(todo[r])
            cols_out.append(c)
            sims_out.append(s)
            break
        k = min(2 * k, cap)
    return _concat(rows_out, cols_out, sims_out)
