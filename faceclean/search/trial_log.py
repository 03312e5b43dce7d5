"""The search log ``trials.jsonl``: one JSON line per finished trial, appended as each ends.

A kill can tear the last line (a partial write); :func:`read_log` with ``repair=True``
truncates it with a warning, since that trial is simply run again on resume. A bad line
anywhere else means the file was edited or corrupted, and is an error naming it.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from faceclean.errors import FacecleanError


def append_record(path: Path, record: dict) -> None:
    """Append one trial as a JSON line, flushed to disk before returning."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_log(run_dir: str | Path, repair: bool = False) -> list[dict]:
    """The finished trials of ``run_dir/trials.jsonl`` (empty when absent). A torn last line
    is dropped (and, with ``repair``, cut from the file) with a warning."""
    path = Path(run_dir) / "trials.jsonl"
    if not path.exists():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    last = max((n for n, line in enumerate(lines) if line.strip()), default=-1)
    records, offset = [], 0
    for n, line in enumerate(lines):
        try:
            if line.strip():
                records.append(json.loads(line))
        except (ValueError, UnicodeDecodeError):
            if n != last:
                raise FacecleanError(f"line {n + 1} is not valid JSON", path) from None
            warnings.warn(
                f"{path}: the last line is torn (a killed write); "
                + ("truncated it, its trial runs again" if repair else "ignored it"),
                stacklevel=2,
            )
            if repair:
                with open(path, "r+b") as f:
                    f.truncate(offset)
            break
        offset += len(line) + 1
    return records
