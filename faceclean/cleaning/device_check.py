"""CPU (blocked BLAS) against GPU (FAISS) on the filter's discriminability scores, on a
synthetic store (`faceclean doctor` runs it where FAISS sees a GPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from faceclean.data.device_check import agreement

# Cosines are O(1): an absolute tolerance; keep flips are allowed only for scores this
# close to the threshold.
TOL_SCORE = 1e-4


def check_filter(tmp: Path, gpu: str = "cuda") -> str:
    """Filter a synthetic store in ``tmp`` with BLAS on the CPU and FAISS on ``gpu``; "same:
    ..." when D agrees within :data:`TOL_SCORE` and keep flips only near tau."""
    from faceclean.cleaning.filter import filter_store
    from faceclean.data.synthetic import clustered_embeddings, write_embedding_store

    x, y = clustered_embeddings(50, 8, 64, seed=2)
    write_embedding_store(tmp / "e.parquet", x, y)
    cpu = filter_store(tmp / "e.parquet", 0.3, device="cpu", backend="blas").scores
    gpu = filter_store(tmp / "e.parquet", 0.3, device=gpu, backend="faiss").scores
    a = cpu["discriminability"].to_numpy()
    b = gpu["discriminability"].to_numpy()
    diff = float(np.abs(a - b).max())
    flips = int((cpu["keep"].to_numpy() != gpu["keep"].to_numpy()).sum())
    near = int((np.abs(a - 0.3) <= TOL_SCORE).sum())
    ok = diff <= TOL_SCORE and flips <= near
    return agreement(ok, f"max |D CPU - GPU| {diff:.2e} over {len(a)} samples, {flips} keep flips")
