"""Reading a dataset on a thread pool in order, with a bounded number of calls ahead."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(
    pool: Executor, fn: Callable[[T], R], items: Iterable[T], window: int
) -> Iterator[tuple[T, R]]:
    """``(item, fn(item))`` for each of ``items``, in their order, computed on ``pool`` with
    at most ``window`` calls submitted and not yet read (``items`` is consumed lazily: it
    may be a generator over millions of images, and results wait in memory only within the
    window). An exception of ``fn`` is raised here when its item's turn comes."""
    inflight: deque = deque()
    for item in items:
        inflight.append((item, pool.submit(fn, item)))
        if len(inflight) >= window:
            first, fut = inflight.popleft()
            yield first, fut.result()
    while inflight:
        first, fut = inflight.popleft()
        yield first, fut.result()
