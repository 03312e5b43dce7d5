"""One progress style for every long loop: count, rate and ETA on stderr.

On a terminal it is a rich progress bar. In a batch job or a log file (stderr not a
terminal) a bar draws nothing until the end, so there it is one plain line at a steady
interval instead: ``train: 1,200/10,000 steps (12.0%)  3.1 steps/s  ETA 0:47:19``. The
interval is ``FACECLEAN_PROGRESS_EVERY`` seconds (default 30; 0 prints every advance).
"""

from __future__ import annotations

import os
import sys
import time

_DEFAULT_EVERY_S = 30.0


def _interval_s() -> float:
    raw = os.environ.get("FACECLEAN_PROGRESS_EVERY", "")
    try:
        value = float(raw)
    except ValueError:
        return _DEFAULT_EVERY_S
    return value if value >= 0 and value == value else _DEFAULT_EVERY_S


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class RowProgress:
    """Progress over ``total`` items (images, rows, steps), or nothing when disabled.

    ``done`` is what a resumed job had already finished: it counts towards done/total but
    not towards the rate, which is measured on this run's work only.
    """

    def __init__(self, enabled: bool, name: str, total: int, done: int = 0, unit: str = "rows"):
        self.bar = None
        self.lines = False
        if not enabled:
            return
        self.name, self.total, self.done, self.unit = name, total, done, unit
        self.t0, self.count = time.perf_counter(), 0
        if not sys.stderr.isatty():
            self.lines, self.every = True, _interval_s()
            self.last = self.t0
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn(f"[bold]{name}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} " + unit + "/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self.bar.start()
        self.task = self.bar.add_task(name, total=total, completed=done, rate="-")

    def _rate(self) -> float:
        return self.count / max(time.perf_counter() - self.t0, 1e-9)

    def _line(self, tail: str | None = None) -> str:
        rate = self._rate()
        pct = 100.0 * self.done / self.total if self.total else 100.0
        if tail is None:
            tail = "ETA " + (_clock((self.total - self.done) / rate) if rate > 0 else "-")
        return (
            f"{self.name}: {self.done:,}/{self.total:,} {self.unit} ({pct:.1f}%)  "
            f"{rate:,.1f} {self.unit}/s  {tail}"
        )

    def advance(self, n: int) -> None:
        if self.bar:
            self.count += n
            self.bar.update(self.task, advance=n, rate=f"{self._rate():,.0f}")
        elif self.lines:
            self.count += n
            self.done += n
            now = time.perf_counter()
            if now - self.last >= self.every:
                self.last = now
                print(self._line(), file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar:
            self.bar.stop()
        elif self.lines:
            elapsed = _clock(time.perf_counter() - self.t0)
            print(self._line(f"finished in {elapsed}"), file=sys.stderr, flush=True)
            self.lines = False
