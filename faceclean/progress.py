"""One progress bar style for every long loop: count, rate and ETA on stderr."""

from __future__ import annotations

import time


class RowProgress:
    """A rich progress bar counting items (images, rows), or nothing when disabled."""

    def __init__(self, enabled: bool, name: str, total: int, done: int = 0, unit: str = "rows"):
        self.bar = None
        if not enabled:
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
        self.t0, self.count = time.perf_counter(), 0

    def advance(self, n: int) -> None:
        if self.bar:
            self.count += n
            rate = self.count / max(time.perf_counter() - self.t0, 1e-9)
            self.bar.update(self.task, advance=n, rate=f"{rate:,.0f}")

    def close(self) -> None:
        if self.bar:
            self.bar.stop()
