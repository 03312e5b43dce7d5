"""Connected components of the undirected graphs the cleaning builds: merge's centroid
links between classes and dedup's near-duplicate pairs between images. One vectorised
implementation (minimum-label propagation with pointer jumping) serves both."""

from __future__ import annotations

import numpy as np


def components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected-component id (the smallest member) of each of n nodes 0..n-1, edges
    a[i]-b[i]. O((n + edges) log n) array passes; no Python loop over nodes or edges."""
    comp = np.arange(n)
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    while True:
        low = np.minimum(comp[a], comp[b])
        new = comp.copy()
        np.minimum.at(new, a, low)
        np.minimum.at(new, b, low)
        new = new[new]  # pointer jumping: follow each node's representative
        if np.array_equal(new, comp):
            return comp
        comp = new


def component_groups(nodes: np.ndarray, a: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
    """The components of a graph over arbitrary integer ``nodes`` (edges a[i]-b[i] between
    members of ``nodes``), each as a sorted array of node values, ordered by their smallest
    member."""
    nodes = np.unique(np.asarray(nodes, np.int64))
    if len(nodes) == 0:
        return []
    ia, ib = np.searchsorted(nodes, a), np.searchsorted(nodes, b)
    comp = components(len(nodes), ia, ib)
    order = np.argsort(comp, kind="stable")
    starts = np.flatnonzero(np.r_[True, comp[order][1:] != comp[order][:-1]])
    return [nodes[part] for part in np.split(order, starts[1:])]
