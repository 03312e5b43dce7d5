"""The search's saved state (``state.pt``): JSON plus tensors, never a pickle of objects.

The file is a ``torch.save`` of ``{"format", "meta": <JSON text>, "tensors": {name: tensor
or nested dict of tensors and numbers}}``, read back with ``torch.load(weights_only=True)``,
which refuses every global outside torch's tensor allow-list: a crafted file cannot run
code, it is refused with a one-line error naming it. ``meta`` holds everything that is not
a tensor (step, the batch in flight, RNG state of NumPy, fingerprints, entropy history).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from faceclean.data.store import atomic_path
from faceclean.errors import FacecleanError

FORMAT = "faceclean-search-state/2"


def save_state(path: Path, meta: dict, tensors: dict) -> None:
    """Write ``meta`` (JSON-serialisable) and ``tensors`` atomically to ``path``."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "meta": json.dumps(meta), "tensors": tensors}, tmp)


def load_state(path: Path) -> tuple[dict, dict]:
    """(meta, tensors) of a state written by :func:`save_state`; a file that is not one (a
    crafted pickle, an older format, a torn file) raises FacecleanError naming it."""
    try:
        blob = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise FacecleanError(
            f"not a search state this version can load safely ({reason})", path
        ) from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise FacecleanError(f"not a search state of format {FORMAT}", path)
    try:
        meta = json.loads(blob["meta"])
    except (KeyError, TypeError, ValueError):
        raise FacecleanError("search state has no readable metadata", path) from None
    return meta, blob.get("tensors", {})
