"""`faceclean extract --shard I/N`: one deterministic slice of a dataset per machine.

Every shard lists the whole dataset (cheap next to embedding it), so labels and identity
names are those of the whole dataset, and takes the contiguous slice
``[I*n//N, (I+1)*n//N)`` of its rows: the N shards' stores joined in shard order are row for
row one whole extraction, and filter, merge and clean read them together as one store.
``--shard all/N`` extracts every shard, one after another or, with ``--ray-address``, as Ray
tasks (one GPU each when the cluster has GPUs), each written to
``<output stem>.shard-IIIII-of-NNNNN.parquet``.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from faceclean.data.datasets import FaceDataset
from faceclean.errors import FacecleanError

_SHARD = re.compile(r"^\s*(all|\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str) -> tuple[int | None, int]:
    """'I/N' -> (I, N) with 0 <= I < N; 'all/N' -> (None, N)."""
    m = _SHARD.match(text or "")
    if not m:
        raise FacecleanError(f"--shard takes I/N (0-based) or all/N, not {text!r}")
    n = int(m.group(2))
    i = None if m.group(1) == "all" else int(m.group(1))
    if n < 1 or (i is not None and not 0 <= i < n):
        raise FacecleanError(f"--shard {text}: need N >= 1 and 0 <= I < N")
    return i, n


def shard_bounds(n_rows: int, i: int, n: int) -> tuple[int, int]:
    """Rows [start, stop) of shard i of n: contiguous, sizes differ by at most one."""
    return i * n_rows // n, (i + 1) * n_rows // n


def shard_of(ds: FaceDataset, i: int, n: int) -> FaceDataset:
    """Shard i of n of a listing: its rows, the whole dataset's labels and identities.
    Entries that could not be listed at all are reported by shard 0 only."""
    s, e = shard_bounds(len(ds), i, n)
    return dataclasses.replace(
        ds,
        paths=ds.paths[s:e],
        labels=ds.labels[s:e],
        unreadable=ds.unreadable if i == 0 else [],
        _rec_keys=None if ds._rec_keys is None else ds._rec_keys[s:e],
    )


def shard_path(output: str | Path, i: int, n: int) -> Path:
    """``emb.parquet`` -> ``emb.shard-00001-of-00003.parquet``."""
    output = Path(output)
    stem = output.name.removesuffix(".parquet")
    return output.with_name(f"{stem}.shard-{i:05d}-of-{n:05d}.parquet")


def _run_shard(extract, data, model, output, i, n, kwargs) -> dict:
    r = extract(data, model, output, shard=(i, n), **kwargs)
    return {
        "shard": i,
        "output": str(r.output),
        "images": r.num_images,
        "written": r.num_written,
        "failed": r.num_failed,
        "seconds": r.seconds,
        "providers": r.providers,
    }


def extract_shards(
    extract, data, model, output, n: int, ray_address: str | None = None, **kwargs
) -> list[dict]:
    """Run ``extract`` (:func:`faceclean.data.extraction.extract`) for all n shards of
    ``data`` into :func:`shard_path` files; with ``ray_address`` ("local" starts a private
    instance) as Ray tasks, one GPU each when the cluster has GPUs, else one CPU each.
    Returns one summary dict per shard, in order."""
    outputs = [shard_path(output, i, n) for i in range(n)]
    if ray_address is None:
        return [_run_shard(extract, data, model, outputs[i], i, n, kwargs) for i in range(n)]
    try:
        import ray
    except ImportError:
        raise FacecleanError('--ray-address needs Ray: pip install "faceclean[ray]"') from None
    started = not ray.is_initialized()
    if started:
        if ray_address == "local":
            ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=ray_address, log_to_driver=False)
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        task = ray.remote(num_gpus=1 if gpus else 0, num_cpus=0 if gpus else 1)(_run_shard)
        # Paths travel as strings: every node resolves them on its own shared filesystem.
        refs = [
            task.remote(extract, str(data), str(model), str(outputs[i]), i, n, kwargs)
            for i in range(n)
        ]
        try:
            return ray.get(refs)
        except ray.exceptions.RayTaskError as e:
            cause = e.as_instanceof_cause()
            if isinstance(cause, FacecleanError):  # a user error on a worker stays one line
                raise FacecleanError(cause.message, cause.path) from None
            raise
    finally:
        if started:
            ray.shutdown()
