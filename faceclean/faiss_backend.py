"""Exact inner-product top-k over centroids with FAISS: all GPUs when there are any.

The index is a brute-force ``IndexFlatIP``: results are exact (up to float32 rounding),
the same on CPU and GPU. Import faiss lazily so that stages that do not search need not
load it.
"""

from __future__ import annotations

import numpy as np

from faceclean.errors import FacecleanError


def _faiss():
    try:
        import faiss
    except ImportError:
        raise FacecleanError(
            "FAISS is not installed: pip install 'faceclean[cpu]' (or [gpu])"
        ) from None
    return faiss


def num_gpus() -> int:
    faiss = _faiss()
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


class InnerProductIndex:
    """Top-k inner products of queries against a fixed set of vectors.

    Args:
        vectors: float32 [K, d], the database (e.g. unit centroids).
        device: "auto" (every GPU when faiss-gpu sees one, sharded), "cpu" or "cuda".
    """

    def __init__(self, vectors: np.ndarray, device: str = "auto"):
        faiss = _faiss()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
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
            self.device = "cpu"
        index.add(vectors)
        self.index = index
        self.size = len(vectors)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities [n, k] descending, positions [n, k] into ``vectors``)."""
        k = min(k, self.size)
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
