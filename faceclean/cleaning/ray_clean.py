"""The filter's two passes as Ray tasks: `clean`, `filter`, `merge --ray-address ADDR`.

The stores are cut into *pieces*: each store given is one (the shards of ``extract --shard
all/N``), or, with one store, contiguous ranges of its row groups, one per worker of the
cluster (its GPUs, else its CPUs). A batch never spans two row groups
(:func:`faceclean.data.store.iter_row_groups`), so a piece yields exactly the batches the
whole store yields there, and the tasks compute what one process computes, on the same
batches:

* class sums: each task returns its batches' partial sums (distinct labels, float32 sums,
  counts: about K x d in all for a store in class order, as extract writes it) and this
  process adds them in store order (:func:`faceclean.cleaning.store_sums.sum_partials`): the
  same additions in the same order as one process, so the same bits. One CPU a task (a
  float32 scatter-add; a GPU would idle).
* scoring: the per-class state (:func:`faceclean.cleaning.scoring.scorer_state`: the unit
  centroids, the sums x . S_y reads, their norms and counts) is put in the object store
  once and read there by every task (no copy per task on a node); each task scores its
  batches against it (one GPU a task when the cluster has GPUs, else one CPU) and returns
  the score columns with, once the thresholds are known, only the embeddings of the rows
  they drop (the kept sums need them: :mod:`.dropped`). This process writes the scores in
  store order, so every output is the one-process output.

Paths travel as strings: every node must see the stores at the same path (a shared
filesystem, as ``extract --shard all/N --ray-address`` writes them) and have faceclean
installed. ``"local"`` starts a private Ray instance on this machine.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from faceclean.cleaning.scoring import LocalStores, Scorer, keep_mask, scorer_state
from faceclean.cleaning.store_sums import (
    _checked_file,
    _label_bound,
    batch_partial,
    max_label_bound,
    sum_partials,
)
from faceclean.data.store import as_paths, open_stores
from faceclean.errors import FacecleanError

INSTALL = 'pip install "faceclean[ray]"'


def import_ray():
    """The ``ray`` module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise FacecleanError(f"--ray-address needs Ray: {INSTALL}") from None
    return ray


@contextlib.contextmanager
def ray_session(address: str | None):
    """Connect to the cluster at ``address`` ("local": start one here) unless this process
    is connected already (then leave it connected, as extract's shards do); None: nothing.
    """
    if not address:
        yield None
        return
    ray = import_ray()
    started = not ray.is_initialized()
    if started:
        if address == "local":
            ray.init(include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def pieces(paths: list[Path], parts: int) -> list[tuple[str, int, int, int]]:
    """(path, first row group, end row group, first row) of each piece: every store one
    piece, or one store cut into ``parts`` ranges of whole row groups."""
    out = []
    for path, pf in open_stores(paths):
        md = pf.metadata
        sizes = [md.row_group(i).num_rows for i in range(md.num_row_groups)]
        starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        n = max(1, min(parts if len(paths) == 1 else 1, len(sizes)))
        bounds = np.linspace(0, len(sizes), n + 1).round().astype(int)
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            if b > a or len(sizes) == 0:
                out.append((str(path), int(a), int(b), int(starts[a])))
    return out


def _piece_batches(piece, columns, batch_rows: int, max_label: int) -> Iterator[dict]:
    path, first, end, start = piece
    return _checked_file(Path(path), columns, batch_rows, max_label, range(first, end), start)


def _piece_partials(piece, batch_rows: int, max_label: int) -> list[tuple]:
    """A task: the per-batch partial class sums of one piece, in order."""
    batches = _piece_batches(piece, ("label", "embedding"), batch_rows, max_label)
    return [batch_partial(b["label"], b["embedding"]) for b in batches]


def _score_piece(state, piece, columns, batch_rows, max_label, run, thresholds) -> list:
    """A task: (batch less its embeddings, scores) for each batch of one piece; with
    ``thresholds``, ``batch["_dropped"]`` holds the labels and embeddings of the rows
    :func:`~faceclean.cleaning.scoring.keep_mask` drops."""
    loo_below, device, backend = run
    score = Scorer(state, loo_below, device, backend)
    cols = tuple(dict.fromkeys((*columns, "label", "embedding")))
    out = []
    for batch in _piece_batches(piece, cols, batch_rows, max_label):
        scores = score(batch["embedding"], batch["label"])
        x = batch.pop("embedding")
        if thresholds is not None:
            drop = ~keep_mask(batch, scores, thresholds)
            if drop.any():
                batch["_dropped"] = (batch["label"][drop], x[drop])
        out.append((batch, scores))
    return out


class RayStores:
    """The filter's passes over ``path`` as Ray tasks (a Ray session must be open:
    :func:`ray_session`); the interface of :class:`faceclean.cleaning.scoring.LocalStores`."""

    def __init__(self, path: list[Path], batch_rows: int):
        self.ray = import_ray()
        self.path, self.batch_rows = path, batch_rows
        stores = open_stores(path)
        self.dim = stores[0][1].schema_arrow.field("embedding").type.list_size
        self.k0 = _label_bound(stores)
        self.max_label = max_label_bound(sum(pf.metadata.num_rows for _, pf in stores))
        resources = self.ray.cluster_resources()
        self.gpus = int(resources.get("GPU", 0))
        self.pieces = pieces(path, self.gpus or int(resources.get("CPU", 1)))

    def _results(self, refs) -> Iterator:
        """Each task's list, in order; a user error on a worker stays a one-line error."""
        ray = self.ray
        for ref in refs:
            try:
                yield from ray.get(ref)
            except ray.exceptions.RayTaskError as e:
                cause = e.as_instanceof_cause()
                if isinstance(cause, FacecleanError):
                    raise FacecleanError(cause.message, cause.path) from None
                raise

    def class_sums(self) -> tuple[np.ndarray, np.ndarray]:
        task = self.ray.remote(num_cpus=1)(_piece_partials)
        refs = [task.remote(p, self.batch_rows, self.max_label) for p in self.pieces]
        return sum_partials(self._results(refs), self.k0, self.dim)

    def score_batches(self, scored, run, columns, thresholds=None, on_block=None):
        """(batch, scores) in store order (nothing starts until the first is read)."""
        if on_block is not None:
            raise ValueError("on_block is not supported on Ray")
        where = self.path[0] if len(self.path) == 1 else ", ".join(p.name for p in self.path)
        state = self.ray.put(scorer_state(*scored, where))  # once, read by every task
        gpu = {"num_gpus": 1, "num_cpus": 0} if self.gpus else {"num_cpus": 1}
        task = self.ray.remote(**gpu)(_score_piece)
        args = (columns, self.batch_rows, self.max_label, run, thresholds)
        refs = [task.remote(state, p, *args) for p in self.pieces]
        del state  # the tasks hold it; freed when the last one is done
        yield from self._results(refs)


def stores_for(path, batch_rows: int, ray_address: str | None = None):
    """The class sums and scoring passes over ``path``: in this process, or as Ray tasks
    with ``ray_address`` (a session must be open: :func:`ray_session`)."""
    if ray_address:
        return RayStores(as_paths(path), batch_rows)
    return LocalStores(as_paths(path), batch_rows)
